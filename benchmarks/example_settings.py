"""PSNR-Y and time of candidate settings for ``cresshift sample --example`` (the 128x128 LR astronaut).

Prints one line per (solver, NFE, rho): NFE used, PSNR-Y against the HR photograph, wall
and process CPU seconds of the pipeline run, and the machine's load average (wall time on a
shared machine depends on it; CPU seconds much less). Bicubic is the first line.

    python benchmarks/example_settings.py
    python benchmarks/example_settings.py --settings dpmpp-2m:3:4 heun:5:4
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from cresshift.data.io import bicubic_down
from cresshift.demo.samples import EXAMPLE_PHOTO, find_photo
from cresshift.metrics import psnr_y
from cresshift.models.pipeline import load_pipeline, upsample_lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["dpmpp-2m:3:4", "ddim:3:4", "heun:3:4", "dpmpp-2m:4:4",
                                                          "heun:5:4"], help="solver:nfe:rho ...")
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()
    hr = find_photo(EXAMPLE_PHOTO).hr()
    lr = bicubic_down(hr, 4)[None]
    pipe = load_pipeline(args.model, cpu_bf16=())
    print(f"{EXAMPLE_PHOTO}: LR {lr.shape[-1]}x{lr.shape[-2]}, model {args.model}, torch threads {torch.get_num_threads()}")
    print(f"bicubic: PSNR-Y {float(psnr_y(upsample_lr(lr, 4).clamp(-1, 1), hr[None])):.3f} dB")
    for item in args.settings:
        solver, nfe, rho = item.split(":")
        wall, cpu = time.perf_counter(), time.process_time()
        res = pipe.run(lr, solver=solver, nfe=int(nfe), rho=float(rho), seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"{solver} NFE {res.nfe} rho {float(rho):g}: PSNR-Y {float(psnr_y(res.sr, hr[None])):.3f} dB, "
              f"wall {wall:.1f} s, CPU {cpu:.1f} s, load average {load}", flush=True)


if __name__ == "__main__":
    main()
