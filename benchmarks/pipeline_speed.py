"""Seconds per image and peak memory of the official realsr-x4 architecture (random weights).

Splits the time into network / solver / autoencoder for NFE 15 and 5 at 64x64 LR (256x256
output), on the CPU, and on a GPU when there is one (fp32, and fp16/bf16 autocast).

    python benchmarks/pipeline_speed.py                   # CPU
    python benchmarks/pipeline_speed.py --device cuda     # GPU: fp32, fp16, bf16
    python benchmarks/pipeline_speed.py --eager           # the plain eager path (SRPipeline.run(fast=False))
    python benchmarks/pipeline_speed.py --compare         # eager vs fast side by side, interleaved repeats

``--compare`` runs the eager and the fast path alternately in one process (``--repeats`` rounds
each, the order flipped every round) and prints the median wall seconds and process CPU seconds
of each, their ratio, and the PSNR between the two paths' outputs (same seed). The fast path is
the pipeline's default (on the CPU: the parts in ``DEFAULT_CPU_BF16`` in bfloat16) unless
``--cpu-bf16`` names the parts (``all``, ``none``, ``network,encoder`` ...); ``--compile`` runs its
network through ``torch.compile`` (inductor, ``freezing``), the first call's compile time reported
apart. The LR input is a 4x-downscaled crop of a bundled photograph (``--input noise``: uniform
noise, as before); ``--model bundled`` times the bundled pixel-space model instead.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

import cresshift
from cresshift.models.pipeline import load_pipeline


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak 2); inf when equal."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def photo_lr(size: int, batch: int) -> torch.Tensor:
    """A size x size LR batch: a crop of the bundled astronaut photograph downscaled x4 (antialiased bicubic)."""
    from PIL import Image

    path = Path(cresshift.__file__).parent / "bundled" / "photos" / "astronaut.png"
    im = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
    hr = torch.from_numpy(im).permute(2, 0, 1)[None]
    if min(hr.shape[-2:]) < 4 * size:  # a large --lr-size: the whole photograph, upscaled
        hr = F.interpolate(hr, size=(4 * size, 4 * size), mode="bicubic", align_corners=False)
    x0 = min(100, hr.shape[-1] - 4 * size)  # the astronaut's face and badge (64x64 LR: x from 100)
    hr = hr[..., :4 * size, x0:x0 + 4 * size]
    lr = F.interpolate(hr, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    return lr.expand(batch, -1, -1, -1).contiguous()


def photo_codebook(pipe) -> None:
    """Replace the random VQ codebook by 8192 latent vectors of the bundled photographs' encodings.

    A trained codebook covers the latents densely; the random one (uniform in +-1/8192) maps every
    latent to one of a few corner entries, which hides errors before the decoder."""
    from PIL import Image

    vectors = []
    with torch.no_grad():
        for path in sorted((Path(cresshift.__file__).parent / "bundled" / "photos").glob("*.png")):
            im = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
            img = torch.from_numpy(im).permute(2, 0, 1)[None, :, :256, :256].to(pipe.device)
            vectors.append(pipe.autoencoder.encode(img).movedim(1, -1).reshape(-1, pipe.autoencoder.embed_dim))
        vectors = torch.cat(vectors)
        weight = pipe.autoencoder.quantize.embedding.weight
        pick = torch.randperm(len(vectors), generator=torch.Generator().manual_seed(0))[:weight.shape[0]]
        weight.copy_(vectors[pick.to(vectors.device)])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed_run(pipe, lr: torch.Tensor, device: torch.device, **kwargs) -> tuple[float, float, object]:
    """(wall s, process CPU s, SRResult) of one pipeline run."""
    cpu, wall = time.process_time(), time.perf_counter()
    res = pipe.run(lr, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, res


def compare(pipe, lr: torch.Tensor, device: torch.device, solvers: list[str], nfes: list[int], repeats: int,
            graphs: bool, warmup: int = 1, variants: Optional[list[Optional[str]]] = None) -> list[dict]:
    """Eager vs fast path, interleaved: median wall and CPU seconds per image, ratios, output PSNR.

    ``variants``: ``cpu_bf16`` settings of the fast path (None: the pipeline's default), each a row,
    all interleaved with the same eager runs (the order rotates every round). The first fast run of
    each (warm-up, untimed) also makes the bfloat16 copies and compiles; its seconds are printed apart."""
    variants = variants or [None]
    print("| solver | NFE | fast path | eager s/image | fast s/image | speed-up | eager CPU s | fast CPU s | "
          "CPU speed-up | PSNR eager vs fast dB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows, batch = [], lr.shape[0]
    paths = ["eager"] + list(range(len(variants)))

    def run(path, kw):
        if path == "eager":
            return timed_run(pipe, lr, device, fast=False, **kw)
        pipe.cpu_bf16 = variants[path]
        return timed_run(pipe, lr, device, fast=True, **kw)

    for nfe in nfes:
        for solver in solvers:
            kw = dict(solver=solver, nfe=nfe, rho=1.0, seed=0)
            pipe.cuda_graphs = graphs
            for k in range(max(warmup, 1)):  # warm-up (copies, compilation, graph capture) outside the timing
                for path in paths:
                    wall, cpu, _ = run(path, kw)
                    if k == 0 and path != "eager":
                        print(f"(first fast run, {solver} NFE {nfe}, bf16 {variants[path] or 'default'}: {wall:.1f} s "
                              f"wall, {cpu:.1f} s CPU, with making the bfloat16 copies"
                              f"{' and compiling' if pipe._compile_kwargs is not None else ''})", flush=True)
            times = {p: [] for p in paths}
            out = {}
            for r in range(repeats):
                for path in paths[r % len(paths):] + paths[:r % len(paths)]:
                    wall, cpu, res = run(path, kw)
                    times[path].append((wall, cpu))
                    out[path] = res.sr
            med = {p: [statistics.median(t[i] for t in times[p]) / batch for i in (0, 1)] for p in times}
            for v in paths[1:]:
                pipe.cpu_bf16 = variants[v]
                label = (f"bf16: {','.join(sorted(pipe.cpu_bf16)) or 'none'}" if device.type == "cpu" else "fast")
                row = dict(solver=solver, nfe=nfe, fast_path=label, eager_s=med["eager"][0], fast_s=med[v][0],
                           eager_cpu_s=med["eager"][1], fast_cpu_s=med[v][1], psnr_db=psnr(out["eager"], out[v]),
                           walls={"eager": [t[0] for t in times["eager"]], "fast": [t[0] for t in times[v]]},
                           cpus={"eager": [t[1] for t in times["eager"]], "fast": [t[1] for t in times[v]]})
                rows.append(row)
                print(f"| {solver} | {nfe} | {label} | {row['eager_s']:.3f} | {row['fast_s']:.3f} | "
                      f"{row['eager_s'] / row['fast_s']:.2f}x | {row['eager_cpu_s']:.3f} | {row['fast_cpu_s']:.3f} | "
                      f"{row['eager_cpu_s'] / row['fast_cpu_s']:.2f}x | {row['psnr_db']:.1f} |", flush=True)
            pipe.cpu_bf16 = variants[0]
    return rows


def per_part(args: argparse.Namespace, lr: torch.Tensor, device: torch.device, dtypes: list[str],
             name: str) -> list[dict]:
    """Best-of-repeats seconds per image split into network / solver / autoencoder, per dtype, NFE, solver."""
    print("| dtype | solver | NFE | s/image | network s | solver s | autoencoder s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for dt in dtypes:
        dtype = getattr(torch, dt)
        pipe = load_pipeline("realsr-x4-v1", random_weights=True, device=device,
                             dtype=dtype if dtype != torch.float32 else None, fast=not args.eager,
                             cuda_graphs=args.cuda_graphs)
        for nfe in [int(n) for n in args.nfe.split(",")]:
            for solver in args.solvers.split(","):
                pipe.run(lr, solver=solver, nfe=nfe, rho=1.0, seed=0)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                runs = [timed_run(pipe, lr, device, solver=solver, nfe=nfe, rho=1.0, seed=0)
                        for _ in range(args.repeats)]
                total, _, res = min(runs, key=lambda run: run[0])
                peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_rss_mb())
                row = dict(dtype=dt, solver=solver, nfe=res.nfe, seconds_per_image=total / args.batch,
                           network=res.seconds["network"], solver_s=res.seconds["solver"],
                           autoencoder=res.seconds["autoencoder"], peak_mb=peak, device=name)
                rows.append(row)
                print(f"| {dt} | {solver} | {res.nfe} | {row['seconds_per_image']:.3f} | {row['network']:.3f} | "
                      f"{row['solver_s']:.4f} | {row['autoencoder']:.3f} | {peak:.0f} |", flush=True)
    print("peak MB: CUDA max allocated on GPU; process peak RSS on CPU (includes the Python runtime).")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nfe", default=None, help="comma list (default: 15,5; with --compare: 5)")
    ap.add_argument("--solvers", default=None, help="comma list (default: markov,heun,dpmpp-2m; --compare: dpmpp-2m)")
    ap.add_argument("--dtypes", default=None, help="comma list of float32,float16,bfloat16 (GPU default: all)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--eager", action="store_true", help="time the plain eager path (run(fast=False))")
    ap.add_argument("--compare", action="store_true", help="eager vs fast path side by side")
    ap.add_argument("--cuda-graphs", action="store_true", help="fast path with CUDA graphs (GPU)")
    ap.add_argument("--warmup", type=int, default=1, help="--compare: untimed runs of each path first")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--model", default="realsr-x4-v1", help="realsr-x4-v1 (random weights; default) or bundled")
    ap.add_argument("--input", choices=("photo", "noise"), default="photo",
                    help="LR input: a downscaled crop of a bundled photograph (default) or uniform noise")
    ap.add_argument("--cpu-bf16", default=None,
                    help="--compare: parts the CPU fast path runs in bfloat16: all, none or a comma list of "
                         "network,encoder,decoder (default: the pipeline's, DEFAULT_CPU_BF16); several settings "
                         "separated by ';' are timed side by side ('none;encoder;all'), 'default' = the pipeline's")
    ap.add_argument("--photo-codebook", action="store_true",
                    help="realsr: a codebook of the bundled photographs' latents instead of the random one")
    ap.add_argument("--compile", action="store_true",
                    help="--compare: fast path's network through torch.compile (inductor, freezing)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.nfe = args.nfe or ("5" if args.compare else "15,5")
    args.solvers = args.solvers or ("dpmpp-2m" if args.compare else "markov,heun,dpmpp-2m")
    device = torch.device(args.device)
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "float16", "bfloat16"] if device.type == "cuda"
                                                         else ["float32"])
    torch.manual_seed(0)
    if args.input == "photo":
        lr = photo_lr(args.lr_size, args.batch).to(device)
    else:
        lr = (torch.rand(args.batch, 3, args.lr_size, args.lr_size) * 2 - 1).to(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_name()} x{torch.get_num_threads()} threads")
    what = ("realsr-x4 architecture (random weights)" if args.model == "realsr-x4-v1" else f"model {args.model}")
    print(f"# {what}, LR {args.lr_size}x{args.lr_size} ({args.input}) -> "
          f"{4 * args.lr_size}x{4 * args.lr_size}, batch {args.batch}, device: {name}, torch {torch.__version__}")
    if args.compare:
        pipe = load_pipeline(args.model, random_weights=args.model != "bundled", device=device,
                             dtype=getattr(torch, dtypes[0]) if dtypes[0] != "float32" else None,
                             cpu_bf16=None)
        if args.photo_codebook:
            photo_codebook(pipe)
            print("VQ codebook: 8192 latent vectors of the bundled photographs (--photo-codebook)")
        if args.compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            pipe.compile()
        print(f"dtype {dtypes[0]}; default fast path's bfloat16 parts (CPU): "
              f"{','.join(sorted(pipe.cpu_bf16)) or 'none'}{'; torch.compile' if args.compile else ''}; "
              f"{args.warmup} warm-up and {args.repeats} interleaved timed runs per path, "
              f"medians; CPU s = process CPU time (all threads)")
        variants = [None if v.strip() in ("", "default") else v.strip() for v in (args.cpu_bf16 or "default").split(";")]
        rows = compare(pipe, lr, device, args.solvers.split(","), [int(n) for n in args.nfe.split(",")],
                       args.repeats, args.cuda_graphs, args.warmup, variants)
    else:
        rows = per_part(args, lr, device, dtypes, name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, device=name, torch=torch.__version__, cresshift=cresshift.__version__), f,
                      indent=1)


if __name__ == "__main__":
    main()
