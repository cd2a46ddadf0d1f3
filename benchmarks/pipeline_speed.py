"""Seconds per image and peak memory of the official realsr-x4 architecture (random weights).

Splits the time into network / solver / autoencoder for NFE 15 and 5 at 64x64 LR (256x256
output), on the CPU, and on a GPU when there is one (fp32, and fp16/bf16 autocast).

    python benchmarks/pipeline_speed.py                   # CPU
    python benchmarks/pipeline_speed.py --device cuda     # GPU: fp32, fp16, bf16
    python benchmarks/pipeline_speed.py --eager           # the plain eager path (SRPipeline.run(fast=False))
    python benchmarks/pipeline_speed.py --compare         # eager vs fast side by side, interleaved repeats

``--compare`` runs the eager and the fast path alternately in one process (``--repeats`` rounds
each, the order flipped every round) and prints the median wall seconds and process CPU seconds
of each, their ratio, and the PSNR between the two paths' outputs (same seed).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import time

import torch

import cresshift
from cresshift.models.pipeline import load_pipeline


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak 2); inf when equal."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def timed_run(pipe, lr: torch.Tensor, device: torch.device, **kwargs) -> tuple[float, float, object]:
    """(wall s, process CPU s, SRResult) of one pipeline run."""
    cpu, wall = time.process_time(), time.perf_counter()
    res = pipe.run(lr, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, res


def compare(pipe, lr: torch.Tensor, device: torch.device, solvers: list[str], nfes: list[int], repeats: int,
            graphs: bool, warmup: int = 1) -> list[dict]:
    """Eager vs fast path, interleaved: median wall and CPU seconds per image, ratios, output PSNR."""
    print("| solver | NFE | eager s/image | fast s/image | speed-up | eager CPU s | fast CPU s | CPU speed-up | "
          "PSNR eager vs fast dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, batch = [], lr.shape[0]
    for nfe in nfes:
        for solver in solvers:
            kw = dict(solver=solver, nfe=nfe, rho=1.0, seed=0)
            pipe.cuda_graphs = graphs
            for _ in range(warmup):  # warm-up (and graph capture) outside the timing
                for fast in (False, True):
                    pipe.run(lr, fast=fast, **kw)
            times = {False: [], True: []}
            out = {}
            for r in range(repeats):
                for fast in ((False, True) if r % 2 == 0 else (True, False)):
                    wall, cpu, res = timed_run(pipe, lr, device, fast=fast, **kw)
                    times[fast].append((wall, cpu))
                    out[fast] = res.sr
            med = {f: [statistics.median(t[i] for t in times[f]) / batch for i in (0, 1)] for f in times}
            row = dict(solver=solver, nfe=nfe, eager_s=med[False][0], fast_s=med[True][0],
                       eager_cpu_s=med[False][1], fast_cpu_s=med[True][1], psnr_db=psnr(out[False], out[True]),
                       walls={str(f): [t[0] for t in times[f]] for f in times})
            rows.append(row)
            print(f"| {solver} | {nfe} | {row['eager_s']:.3f} | {row['fast_s']:.3f} | "
                  f"{row['eager_s'] / row['fast_s']:.2f}x | {row['eager_cpu_s']:.3f} | {row['fast_cpu_s']:.3f} | "
                  f"{row['eager_cpu_s'] / row['fast_cpu_s']:.2f}x | {row['psnr_db']:.1f} |", flush=True)
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
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.nfe = args.nfe or ("5" if args.compare else "15,5")
    args.solvers = args.solvers or ("dpmpp-2m" if args.compare else "markov,heun,dpmpp-2m")
    device = torch.device(args.device)
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "float16", "bfloat16"] if device.type == "cuda"
                                                         else ["float32"])
    torch.manual_seed(0)
    lr = (torch.rand(args.batch, 3, args.lr_size, args.lr_size) * 2 - 1).to(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads")
    print(f"# realsr-x4 architecture (random weights), LR {args.lr_size}x{args.lr_size} -> "
          f"{4 * args.lr_size}x{4 * args.lr_size}, batch {args.batch}, device: {name}, torch {torch.__version__}")
    if args.compare:
        pipe = load_pipeline("realsr-x4-v1", random_weights=True, device=device,
                             dtype=getattr(torch, dtypes[0]) if dtypes[0] != "float32" else None)
        print(f"dtype {dtypes[0]}; {args.warmup} warm-up and {args.repeats} interleaved timed runs per path, "
              f"medians; CPU s = process CPU time (all threads)")
        rows = compare(pipe, lr, device, args.solvers.split(","), [int(n) for n in args.nfe.split(",")],
                       args.repeats, args.cuda_graphs, args.warmup)
    else:
        rows = per_part(args, lr, device, dtypes, name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, device=name, torch=torch.__version__, cresshift=cresshift.__version__), f,
                      indent=1)


if __name__ == "__main__":
    main()
