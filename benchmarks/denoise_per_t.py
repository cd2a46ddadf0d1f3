"""One-step x0_hat quality along t: what training optimises, against what sampling gets.

For each model and each grid time t = k/T, draws x_t from the forward marginal of the *true*
HR tile, x_t = x0 + eta(t) (y - x0) + kappa sqrt(eta(t)) z (``--noise-seeds`` draws), and prints
the mean PSNR-Y of the model's x0_hat(x_t, t) over the tiles: the quantity the training loss
improves. The last row is one Markov@15 sample from the prior (seed 0), what the quality gate
measures. A model can gain at every t here and still lose as a sampler (``cresshift/bundled/README.md``,
*Phase 2*): sampling feeds the network its own earlier estimates, never the true x_t.

    python benchmarks/denoise_per_t.py bundled-discrete:exp bundled
    python benchmarks/denoise_per_t.py bundled-discrete:exp bundled --tiles cresshift/bundled/testset validation \
        --figure per_t.png

A model is ``name_or_path[:schedule]`` (schedule: exact | exp | paper; default the model's own:
discrete models on their exact continuation). ``--tiles``: a folder of HR tiles (default the
bundled test tiles) or ``validation`` (the tiles the trainer validates on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cresshift.data.io import bicubic_down, list_images, load_image
from cresshift.metrics import psnr_y
from cresshift.models.checkpoints import CheckpointError
from cresshift.models.pipeline import bundled_path, load_pipeline, upsample_lr
from cresshift.schedules import as_continuous


def _tiles(arg: str) -> torch.Tensor:
    if arg == "validation":
        from cresshift.data.photos import validation_tiles
        return torch.stack(validation_tiles(64))
    return torch.stack([load_image(p) for p in list_images([arg])])


def _measure(pipes: list, labels: list[str], hr: torch.Tensor, noise_seeds: int) -> tuple[dict[str, list[float]], float]:
    """{label: [PSNR-Y of x0_hat at t = 1/T .. 1, then of one markov@T sample]}, bicubic PSNR-Y."""
    sf = pipes[0][1].sf
    lr = bicubic_down(hr, sf)
    y = upsample_lr(lr, sf)
    rows: dict[str, list[float]] = {}
    for label, (_, pipe, sched_name) in zip(labels, pipes):
        sched = as_continuous(pipe.schedule_for(sched_name))
        den = pipe.network_denoiser(y, y, schedule=sched)
        row = []
        for k in range(1, sched.T + 1):
            t = k / sched.T
            eta = float(sched.eta(t))
            vals = []
            for seed in range(noise_seeds):
                z = torch.randn(hr.shape, generator=torch.Generator().manual_seed(1000 + seed))
                x = hr + eta * (y - hr) + sched.kappa * eta ** 0.5 * z
                vals.append(float(psnr_y(den(x, torch.full((len(x),), t)).clamp(-1, 1), hr).mean()))
            row.append(sum(vals) / len(vals))
        sample = pipe.run(lr, solver="markov", nfe=sched.T, seed=0, schedule=sched_name).sr
        row.append(float(psnr_y(sample.clamp(-1, 1), hr).mean()))
        rows[label] = row
    return rows, float(psnr_y(y.clamp(-1, 1), hr).mean())


def _plot(sets: list, path: str) -> None:
    """One panel per tile set: each model's gain over the first model, per t, and as a sampler."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cresshift.models.checkpoints import atomic_write
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    for ax, (tiles_arg, n, rows, bic) in zip(axes[0], sets):
        labels = list(rows)
        ref = rows[labels[0]]
        T = len(ref) - 1
        ts = [(k + 1) / T for k in range(T)]
        for label in labels[1:]:
            r = rows[label]
            ax.plot(ts, [a - b for a, b in zip(r[:T], ref[:T])], marker="o", ms=3,
                    label=f"{label}: markov@{T} sample {r[T] - ref[T]:+.3f} dB")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("t  (x_t drawn from the true HR)")
        ax.set_ylabel("PSNR-Y gain of x0_hat (dB)")
        ax.set_title(f"{Path(tiles_arg).name}: {n} tiles (bicubic {bic:.2f} dB)", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"one-step x0_hat, gain over {list(sets[0][2])[0]}", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="name_or_path[:schedule], e.g. bundled-discrete:exp bundled")
    ap.add_argument("--tiles", nargs="+", default=[str(bundled_path("bundled").parent / "testset")],
                    help="folders of HR tiles, or 'validation' (one table and one figure panel each)")
    ap.add_argument("--noise-seeds", type=int, default=2, help="forward-noise draws averaged per t")
    ap.add_argument("--labels", default=None, help="comma-separated names for the models in the table and figure")
    ap.add_argument("--figure", default=None, help="also plot each model's gain over the first one against t (PNG; needs matplotlib)")
    args = ap.parse_args()
    if args.noise_seeds < 1:
        ap.error(f"--noise-seeds must be >= 1, got {args.noise_seeds}")
    if args.figure and len(args.models) < 2:
        ap.error("--figure plots the other models against the first: give at least two")
    labels = args.labels.split(",") if args.labels else list(args.models)
    if len(labels) != len(args.models):
        ap.error(f"--labels names {len(labels)} models, but {len(args.models)} are given")
    try:
        hrs = [_tiles(t) for t in args.tiles]
        pipes = []
        for spec in args.models:
            name, _, sched = spec.rpartition(":") if spec.rsplit(":", 1)[-1] in ("exact", "exp", "paper") else (spec, "", "")
            pipe = load_pipeline(name, cpu_bf16=())
            if pipe.latent:
                raise ValueError(f"{name} is a latent model; this diagnostic is for pixel-space models")
            pipes.append((spec, pipe, sched or None))
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    sets = []
    for tiles_arg, hr in zip(args.tiles, hrs):
        rows, bic = _measure(pipes, labels, hr, args.noise_seeds)
        sets.append((tiles_arg, len(hr), rows, bic))
        T = len(next(iter(rows.values()))) - 1
        print(f"# one-step x0_hat PSNR-Y (dB), mean over {len(hr)} tiles from {tiles_arg}; x_t from the true HR "
              f"({args.noise_seeds} noise draws); bicubic {bic:.3f}")
        print("| k (t = k/T) | " + " | ".join(rows) + " |")
        print("|---|" + "---|" * len(rows))
        for k in range(T):
            print(f"| {k + 1} | " + " | ".join(f"{r[k]:.3f}" for r in rows.values()) + " |")
        print(f"| markov@{T} sample (seed 0) | " + " | ".join(f"**{r[T]:.3f}**" for r in rows.values()) + " |\n")
    if args.figure:
        _plot(sets, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
