"""Seconds per image and peak memory of the official realsr-x4 architecture (random weights).

Splits the time into network / solver / autoencoder for NFE 15 and 5 at 64x64 LR (256x256
output), on the CPU, and on a GPU when there is one (fp32, and fp16/bf16 autocast).

    python benchmarks/pipeline_speed.py                   # CPU
    python benchmarks/pipeline_speed.py --device cuda     # GPU: fp32, fp16, bf16
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

import cresshift
from cresshift.models.pipeline import load_pipeline


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nfe", default="15,5")
    ap.add_argument("--solvers", default="markov,heun,dpmpp-2m")
    ap.add_argument("--dtypes", default=None, help="comma list of float32,float16,bfloat16 (GPU default: all)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "float16", "bfloat16"] if device.type == "cuda"
                                                         else ["float32"])
    torch.manual_seed(0)
    lr = torch.rand(args.batch, 3, args.lr_size, args.lr_size) * 2 - 1
    rows = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    print(f"# realsr-x4 architecture (random weights), LR {args.lr_size}x{args.lr_size} -> "
          f"{4 * args.lr_size}x{4 * args.lr_size}, batch {args.batch}, device: {name}, torch {torch.__version__}")
    print("| dtype | solver | NFE | s/image | network s | solver s | autoencoder s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for dt in dtypes:
        dtype = getattr(torch, dt)
        pipe = load_pipeline("realsr-x4-v1", random_weights=True, device=device,
                             dtype=dtype if dtype != torch.float32 else None)
        for nfe in [int(n) for n in args.nfe.split(",")]:
            for solver in args.solvers.split(","):
                pipe.run(lr, solver=solver, nfe=nfe, rho=1.0, seed=0)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                best = None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    res = pipe.run(lr, solver=solver, nfe=nfe, rho=1.0, seed=0)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    total = time.perf_counter() - t0
                    if best is None or total < best[0]:
                        best = (total, res)
                total, res = best
                peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_rss_mb())
                row = dict(dtype=dt, solver=solver, nfe=res.nfe, seconds_per_image=total / args.batch,
                           network=res.seconds["network"], solver_s=res.seconds["solver"],
                           autoencoder=res.seconds["autoencoder"], peak_mb=peak, device=name)
                rows.append(row)
                print(f"| {dt} | {solver} | {res.nfe} | {row['seconds_per_image']:.3f} | {row['network']:.3f} | "
                      f"{row['solver_s']:.4f} | {row['autoencoder']:.3f} | {peak:.0f} |", flush=True)
    print("peak MB: CUDA max allocated on GPU; process peak RSS on CPU (includes the Python runtime).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, torch=torch.__version__, cresshift=cresshift.__version__), f, indent=1)


if __name__ == "__main__":
    main()
