"""Does CPU bf16 (oneDNN/AMX autocast) stay within the fast path's tolerance? PSNR against fp32 eager.

Runs the realsr-x4 architecture (random weights, 64x64 LR -> 256x256, dpmpp-2m NFE 5, seed 0)
in float32 on the eager path, then on the fast path in float32, with the VQ-f4 autoencoder under
bf16 autocast, with the network under bf16 autocast, and with both, and prints the PSNR of each
output against the float32 eager one (the fast path's bar is 45 dB) and the process CPU seconds.
The pipeline refuses bf16 on the CPU; this script sets the autocast dtypes directly.

    python benchmarks/cpu_bf16_tolerance.py
"""
from __future__ import annotations

import math
import time

import torch

from cresshift.models.pipeline import SRPipeline, load_pipeline


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def main() -> None:
    torch.manual_seed(0)
    pipe = load_pipeline("realsr-x4-v1", random_weights=True)
    lr = torch.rand(1, 3, 64, 64) * 2 - 1
    plain_denoiser = SRPipeline.network_denoiser

    def run(ae_bf16: bool, net_bf16: bool, fast: bool):
        pipe.autocast_dtype = torch.bfloat16 if ae_bf16 else None

        def denoiser(self, *args, **kwargs):
            d = plain_denoiser(self, *args, **kwargs)
            d.autocast_dtype = torch.bfloat16 if net_bf16 else None
            return d
        SRPipeline.network_denoiser = denoiser
        cpu = time.process_time()
        res = pipe.run(lr, solver="dpmpp-2m", nfe=5, rho=1.0, seed=0, fast=fast)
        return res.sr, time.process_time() - cpu

    ref, cpu = run(False, False, False)
    print("| path | PSNR vs float32 eager dB | CPU s |\n|---|---|---|")
    print(f"| float32 eager | inf | {cpu:.1f} |")
    for label, ae, net in [("float32 fast", False, False), ("bf16 autoencoder, fast", True, False),
                           ("bf16 network, fast", False, True), ("bf16 both, fast", True, True)]:
        sr, cpu = run(ae, net, True)
        print(f"| {label} | {psnr(sr, ref):.2f} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
