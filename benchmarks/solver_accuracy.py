"""Solver accuracy on the exact Gaussian problem, and per-step solver overhead.

RMS error of each ODE solver's output against the exact probability-flow solution
(``cresshift.testing.GaussianProblem``) versus NFE, for every rho; writes a Markdown table,
a JSON file and (with matplotlib) a PNG plot; then times the solver's own work per step
(everything but the network) on a 1x3x64x64 latent.

    python benchmarks/solver_accuracy.py --out benchmarks/results/solver_accuracy
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import cresshift
from cresshift import sample
from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule
from cresshift.testing import GaussianProblem

NFES = [3, 5, 8, 10, 15, 20, 30]
RHOS = [1.0, 2.0, 4.0, 8.0, -4.0, -8.0]
# (label, solver, options)
SOLVERS = [
    ("euler", "euler", {}),
    ("heun", "heun", {}),
    ("ddim", "ddim", {}),
    ("dpmpp-2m", "dpmpp-2m", {}),
    ("dpmpp-2m (lambda=-log sigma~)", "dpmpp-2m", {"lambda_var": "sigma"}),
    ("dpmpp-3m", "dpmpp-3m", {}),
]


def accuracy(schedule, n: int, dim: int) -> list[dict]:
    P = GaussianProblem(schedule, dim=dim, seed=0)
    x_T = P.prior(n, seed=1)
    y = P.y.expand_as(x_T)
    exact = P.exact_output(x_T, 1.0, schedule.t_min)
    rows = []
    for label, solver, opts in SOLVERS:
        for rho in RHOS:
            for nfe in NFES:
                if nfe < cresshift.SOLVERS[solver].min_nfe:
                    continue
                r = sample(P.denoiser, y, schedule, solver=solver, nfe=nfe, rho=rho, x_T=x_T, **opts)
                err = float(((r.x - exact) ** 2).mean().sqrt())
                rows.append(dict(solver=label, rho=rho, nfe_budget=nfe, nfe=r.nfe, rms=err))
    return rows


def overhead(solver: str, steps: int = 50, repeats: int = 3) -> float:
    """Milliseconds per step spent outside the network on a 1x3x64x64 float32 latent."""
    sched = ExactSchedule(ResShiftSchedule.from_config("realsr-x4-v1"))
    y = torch.randn(1, 3, 64, 64)
    out = torch.randn(1, 3, 64, 64)
    denoiser = lambda x, t: out  # noqa: E731  (a free network)
    nfe = steps * cresshift.SOLVERS[solver].evals_per_step + 1
    sample(denoiser, y, sched, solver=solver, nfe=nfe, rho=1.0)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sample(denoiser, y, sched, solver=solver, nfe=nfe, rho=1.0, generator=torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / steps


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| solver | rho | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
             "|---|---|" + "---|" * len(NFES)]
    for label, _, _ in SOLVERS:
        for rho in RHOS:
            cells = []
            for n in NFES:
                hit = [r for r in rows if r["solver"] == label and r["rho"] == rho and r["nfe_budget"] == n]
                cells.append(f"{hit[0]['rms']:.2e}" + ("" if hit[0]["nfe"] == n else f" ({hit[0]['nfe']})") if hit else "–")
            lines.append(f"| {label} | {rho:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        for label, _, _ in SOLVERS:
            # Each solver at its best rho at NFE 15.
            cands = [r for r in rows if r["solver"] == label and r["nfe_budget"] == 15]
            rho = min(cands, key=lambda r: r["rms"])["rho"]
            pts = sorted((r["nfe"], r["rms"]) for r in rows if r["solver"] == label and r["rho"] == rho)
            ax.loglog(*zip(*pts), marker="o", label=f"{label} (rho={rho:g})")
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error vs exact solution")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/solver_accuracy")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    d = ResShiftSchedule.from_config("realsr-x4-v1")
    schedules = {"exp-alpha fitted to realsr-v1": ExpAlphaSchedule.fit(d, warn=False),
                 "exact realsr-v1": ExactSchedule(d)}
    results = {name: accuracy(s, args.samples, args.dim) for name, s in schedules.items()}
    md = [markdown(rows, name) for name, rows in results.items()]
    # Headline: the target on the fitted schedule.
    rows = results["exp-alpha fitted to realsr-v1"]
    euler15 = next(r["rms"] for r in rows if r["solver"] == "euler" and r["rho"] == 1.0 and r["nfe_budget"] == 15)
    best5 = min((r for r in rows if r["nfe_budget"] == 5), key=lambda r: r["rms"])
    head = (f"Euler(rho=1)@15: {euler15:.2e}; best @5: {best5['solver']} rho={best5['rho']:g} "
            f"{best5['rms']:.2e} = {best5['rms'] / euler15:.2f}x Euler@15 (target <= 0.2x)")
    over = {s: overhead(s) for s in ["euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "sde", "markov"]
            if s != "markov"}
    over_line = "Solver overhead per step, 1x3x64x64 float32 latent, network excluded: " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in over.items())
    env = dict(torch=torch.__version__, cresshift=cresshift.__version__, machine=platform.machine(),
               processor=platform.processor(), threads=torch.get_num_threads(), samples=args.samples, dim=args.dim)
    (out / "solver_accuracy.md").write_text("\n\n".join([head, over_line] + md) + "\n")
    (out / "solver_accuracy.json").write_text(json.dumps(dict(env=env, results=results, overhead_ms=over,
                                                              headline=head), indent=1))
    plotted = plot(results, out / "solver_accuracy.png")
    print(head)
    print(over_line)
    print("\n\n".join(md))
    print(f"wrote {out}/solver_accuracy.md, .json" + (", .png" if plotted else " (no matplotlib: no plot)"))


if __name__ == "__main__":
    main()
