"""The bench run loop: every (image, draw, row) of this process's shard, resumed from the store, merged on rank 0.

Under ``torchrun`` images are sharded across ranks (``i % world == rank``) and the new records
are gathered on rank 0 (gloo on CPU, NCCL on CUDA), which summarises them and writes the reports.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..runtime import Distributed, versions
from .data import Item, draw_seed, load_item
from .report import write_outputs
from .rows import BICUBIC, Plan, Row, baseline_name, plan, row_grid
from .settings import METRICS, BenchResult, BenchSettings
from .store import RecordStore, prepare_out, record_key
from .summary import INTERVALS_NOTE, summarize

Progress = Callable[[int, int, str], None]


def run_bench(settings: BenchSettings, rows: Sequence[Row], *, pipelines: Optional[dict[str, Any]] = None,
              progress: Optional[Progress] = None, log: Optional[Callable[[str], None]] = None
              ) -> Optional[BenchResult]:
    """Run the sweep (resuming from ``settings.out``); rank 0 returns the merged result, other ranks None.

    ``pipelines`` ({"model": p, "baseline": p}) replaces loading (tests, notebooks). Each
    (row, image) is one ``pipeline.run`` on one image with the image's seed.
    """
    from ..metrics import LPIPSMetric

    dist = Distributed(_device_kind(settings.device))
    try:
        p = plan(settings, rows, pipelines=pipelines, local_rank=dist.local_rank)
        shard = p.items[dist.rank::dist.world]
        for item in shard:  # every input read once before the first network call
            load_item(item, p.sf)
        lpips = LPIPSMetric(settings.lpips_net, backbone=settings.lpips_backbone, device=p.device)
        store = RecordStore(Path(settings.out) if settings.out else None, dist.rank)
        if store.out is not None:
            prepare_out(settings, store, dist)
        done = store.load()
        new = _run_shard(settings, p, shard, lpips, store, done, progress, log or (lambda msg: None))
        gathered = dist.gather(new)
        if dist.rank != 0:
            return None
        result = _merge(settings, p, lpips, done, gathered, dist.world)
        if store.out is not None:
            result.outputs = write_outputs(result, store.out)
        return result
    finally:
        dist.close()


def _device_kind(device: str) -> str:
    """``cuda`` when the sweep runs on a GPU (an explicit cuda device, or ``auto`` with one present), else ``cpu``."""
    import torch

    return "cuda" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"


def _run_shard(settings: BenchSettings, p: Plan, shard: Sequence[Item], lpips: Any, store: RecordStore,
               done: dict[tuple[str, str, int], dict[str, Any]], progress: Optional[Progress],
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Compute every (image, draw, row) of ``shard`` not in ``done``, appending each record to ``store``."""
    draws = range(settings.seeds)
    total = len(shard) * len(draws) * len(p.rows)
    finished = sum((r.key, it.name, k) in done for it in shard for k in draws for r in p.rows)
    if finished:
        log(f"resuming: {finished} of {total} results are already in {store.out}")
    if progress:
        progress(finished, total, "")
    new: list[dict[str, Any]] = []
    for item, k in ((it, k) for it in shard for k in draws):
        todo = [r for r in p.rows if (r.key, item.name, k) not in done]
        if not todo:
            continue
        lr, hr = load_item(item, p.sf)
        seed = draw_seed(settings.seed, item.index, k)
        for row in todo:
            rec = _sample_record(settings, p, row, item, (lr, hr), seed, k, lpips)
            store.append(rec)
            new.append(rec)
            finished += 1
            if progress:
                progress(finished, total, f"{item.name}{f' #{k}' if k else ''}: {row.describe()}")
    return new


def _sample_record(settings: BenchSettings, p: Plan, row: Row, item: Item, pair: tuple[Any, Any], seed: int,
                   draw: int, lpips: Any) -> dict[str, Any]:
    """One ``pipeline.run`` of ``row`` on one image (the bicubic row: ``bicubic_sr``), timed and scored against
    its HR: the store's record."""
    from ..metrics import evaluate_pair

    lr, hr = pair
    t0 = time.perf_counter()
    if row.solver == BICUBIC:
        sr, nfe, split = bicubic_sr(lr, p.sf), 0, {}
    else:
        schedule = row.schedule or settings.schedule
        grid, rho = row_grid(row, settings.model, p.pipe(row).schedule_for(schedule))
        res = p.pipe(row).run(lr[None], solver=row.solver, nfe=row.nfe, rho=rho, grid=grid, seed=seed,
                              schedule=schedule, tile=settings.tile, context_pad=settings.context_pad,
                              **dict(row.options))
        sr, nfe, split = res.sr.float().cpu(), res.nfe, res.seconds
    seconds = time.perf_counter() - t0
    if tuple(sr.shape[-2:]) != tuple(hr.shape[-2:]):
        raise ValueError(f"the SR of {item.name} is {sr.shape[-1]}x{sr.shape[-2]} px but its HR is "
                         f"{hr.shape[-1]}x{hr.shape[-2]} px")
    vals = evaluate_pair(sr, hr[None], lpips, crop_border=settings.crop_border)
    rec = {"row": row.key, "image": item.name, "index": item.index, "seed": seed,
           **({"draw": draw} if draw else {}), "nfe": int(nfe), "seconds": seconds,
           "seconds_split": {k: float(v) for k, v in split.items()}}
    for key, *_ in METRICS:
        rec[key] = float(vals[key][0]) if key in vals else None
    return rec


def bicubic_sr(lr: Any, sf: int) -> Any:
    """The bicubic row's image: [1, 3, sf h, sf w] bicubic x sf of an LR [3, h, w], clamped to [-1, 1]."""
    from ..models.pipeline import upsample_lr

    return upsample_lr(lr[None].float(), sf).clamp(-1, 1)


def _merge(settings: BenchSettings, p: Plan, lpips: Any, done: dict[tuple[str, str, int], dict[str, Any]],
           gathered: list[list[dict[str, Any]]], world: int) -> BenchResult:
    """The result of the whole sweep from the records found in the store and those every rank computed."""
    from ..metrics import conventions

    merged = dict(done)
    for part in gathered:
        for rec in part:
            merged.setdefault(record_key(rec), rec)
    draws = range(settings.seeds)
    records = [merged[(r.key, it.name, k)] for r in p.rows for it in p.items for k in draws
               if (r.key, it.name, k) in merged]
    meta = {"settings": asdict(settings), "data": p.hr, "rows": [asdict(r) for r in p.rows],
            "images": [asdict(it) for it in p.items], "versions": versions(), "device": _device_info(p.device),
            "world_size": world, "sf": p.sf,
            "lpips": {"name": lpips.name, "available": lpips.available, "reason": lpips.reason},
            "conventions": conventions(settings.crop_border, lpips if lpips.available else None),
            "models": {"model": settings.model, "baseline": baseline_name(settings, p.pipelines)},
            "seeds": "image i of the sorted dataset (before --limit and sharding) uses seed + i in every row; "
                     "draw k > 0 of it (--seeds) uses draw_seed(seed, i, k)",
            "intervals": INTERVALS_NOTE}
    return BenchResult(table=summarize(p.rows, records, p.items, seeds=settings.seeds), records=records,
                       items=p.items, rows=p.rows, notes=[] if lpips.available else [lpips.reason], meta=meta,
                       lpips_name=lpips.name, computed=sum(len(part) for part in gathered))


def _device_info(device: Any) -> dict[str, Any]:
    """The device the sweep ran on: its name (GPU model or CPU), and the thread count on a CPU."""
    import torch

    info: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info

