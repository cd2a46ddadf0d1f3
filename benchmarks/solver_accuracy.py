"""Solver accuracy at low NFE: every solver x grid x NFE on four problem x schedule cases.

RMS error of each ODE solver's output against the exact probability-flow solution: Gaussian
(``cresshift.testing.GaussianProblem``, closed form) and Gaussian mixture
(``GaussianMixtureProblem``: 2-8 components per dimension, std 0.02-0.12; reference by
scipy DOP853 at rtol 1e-10), each on realsr-v1's fitted exp-alpha schedule and on its exact
continuation; optionally the empirical patch problem (``--empirical``). Prints and writes
(Markdown, JSON, PNG plot): the full tables, the best grid per solver and NFE against
``grid="auto"``, the issue-13 targets (best at NFE 5 vs Euler rho=1 at NFE 15; second-order
convergence order with the default grid on the exact schedule, NFE 100 -> 400) and the
solvers' own time per step. Optimised grids (``cresshift.grids.optimize_grid``) for the best
solvers at NFE 5 are tuned on calibration samples (prior seed ``CALIBRATION_SEED``, never the
evaluation samples, which are seed 1; ``--calib-samples`` of them) and evaluated on the evaluation
samples, in their own rows of the target table (``--no-optimised`` skips them); solver ``tuned``
gets its grid and coefficients from ``cresshift.solvers.optimize.optimize_solver``, and its
fixed-grid baseline is its default coefficients, i.e. the "dpmpp-2m (lambda=-log sigma~)" rows.

    python benchmarks/solver_accuracy.py --out benchmarks/results/solver_accuracy
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

import cresshift
from cresshift import sample
from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule
from cresshift.testing import EmpiricalProblem, GaussianMixtureProblem, GaussianProblem

NFES = [3, 4, 5, 6, 8, 10, 15, 20, 30]
ORDER_NFES = [100, 200, 400]
# (label, grid, rho); "auto" is the solver's default.
GRIDS = [("auto", "auto", None), ("rho 1", "rho", 1.0), ("rho 2", "rho", 2.0), ("rho 4", "rho", 4.0),
         ("rho 7", "rho", 7.0), ("rho -8", "rho", -8.0), ("lambda", "lambda", None), ("logeta", "logeta", None),
         ("logeta 1.5", "logeta", 1.5), ("logeta 2", "logeta", 2.0), ("logeta 3", "logeta", 3.0), ("karras 7", "karras", 7.0)]
# (label, solver, options)
SOLVERS = [("euler", "euler", {}), ("heun", "heun", {}), ("ddim", "ddim", {}), ("dpmpp-2m", "dpmpp-2m", {}),
           ("dpmpp-2m (lambda=-log sigma~)", "dpmpp-2m", {"lambda_var": "sigma"}), ("dpmpp-3m", "dpmpp-3m", {}),
           ("ipndm", "ipndm", {})]
SECOND_ORDER = ["heun", "dpmpp-2m", "dpmpp-3m", "ipndm"]
OPTIMISED = ["ipndm", "dpmpp-2m", "dpmpp-3m", "heun", "tuned"]  # solvers whose NFE-5 grid is optimised
FIXED_LABEL = {"tuned": "dpmpp-2m (lambda=-log sigma~)"}  # the fixed-grid rows of a solver (tuned: its defaults)
OPTIMISED_NFES = [5]
CALIBRATION_SEED = 11  # prior seed of the calibration samples (the evaluation samples use seed 1)


def make_cases(samples: int, dim: int, mix_samples: int, mix_dim: int, empirical: bool,
               calib_samples: int) -> dict[str, Any]:
    """name -> (problem, x_T, y, reference output, (y, x_T, reference) of the calibration samples)."""
    d = ResShiftSchedule.from_config("realsr-x4-v1")
    schedules = {"exp-fit": ExpAlphaSchedule.fit(d, warn=False), "exact": ExactSchedule(d)}
    cases = {}
    for sname, sched in schedules.items():
        builders: list[tuple[str, Callable[[], Any], int]] = [
            ("Gaussian", lambda: GaussianProblem(sched, dim=dim, seed=0), samples),
            ("mixture", lambda: GaussianMixtureProblem(sched, dim=mix_dim, seed=0), mix_samples)]
        if empirical:
            builders.append(("empirical", lambda: EmpiricalProblem.from_image(sched, count=256), mix_samples))
        for pname, build, n in builders:
            problem = build()
            x_T = problem.prior(n, seed=1)
            t0 = time.perf_counter()
            ref = problem.exact_output(x_T, 1.0, sched.t_min)
            print(f"{pname}, {sname}: {n} samples x {x_T.shape[1]} dims, reference in {time.perf_counter() - t0:.1f} s",
                  flush=True)
            x_c = problem.prior(calib_samples, seed=CALIBRATION_SEED)
            calib = (problem.y.expand_as(x_c).clone(), x_c, problem.exact_output(x_c, 1.0, sched.t_min))
            cases[f"{pname}, {sname}"] = (problem, x_T, problem.y.expand_as(x_T), ref, calib)
    return cases


def rms_error(case: Any, solver: str, nfe: int, grid: str, rho: Optional[float], opts: dict) -> tuple[float, int]:
    problem, x_T, y, ref = case[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sample(problem.denoiser, y, problem.schedule, solver=solver, nfe=nfe, grid=grid, rho=rho, x_T=x_T, **opts)
    return float(((r.x - ref) ** 2).mean().sqrt()), r.nfe


def accuracy(case: Any) -> list[dict]:
    rows = []
    for label, solver, opts in SOLVERS:
        for glabel, grid, rho in GRIDS:
            for nfe in NFES:
                if nfe < cresshift.SOLVERS[solver].min_nfe:
                    continue
                err, used = rms_error(case, solver, nfe, grid, rho, opts)
                rows.append(dict(solver=label, grid=glabel, nfe_budget=nfe, nfe=used, rms=err))
    return rows


def optimised(case: Any) -> list[dict]:
    """Grids optimised on the calibration samples (optimize_grid defaults), errors on the evaluation samples."""
    from cresshift.grids import optimize_grid
    from cresshift.solvers.optimize import optimize_solver

    problem, x_T, y, ref, (y_c, x_c, ref_c) = case
    rows = []
    for solver in OPTIMISED:
        for nfe in OPTIMISED_NFES:
            t0 = time.perf_counter()
            tuned = {}
            if solver == "tuned":
                ts, coef = optimize_solver(problem.denoiser, y_c, problem.schedule, nfe=nfe, x_T=x_c, reference=ref_c)
                tuned = dict(coefficients=coef.tolist())
            else:
                ts = optimize_grid(problem.denoiser, y_c, problem.schedule, solver=solver, nfe=nfe, x_T=x_c,
                                   reference=ref_c)
            seconds = time.perf_counter() - t0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = sample(problem.denoiser, y, problem.schedule, solver=solver, nfe=nfe, ts=ts, x_T=x_T, **tuned)
            rows.append(dict(solver=solver, grid="optimised", nfe_budget=nfe, nfe=r.nfe,
                             rms=float(((r.x - ref) ** 2).mean().sqrt()), ts=ts.tolist(), seconds=seconds, **tuned))
    return rows


def orders(case: Any) -> dict[str, dict]:
    """Fitted slope of log error against log steps, default grid, NFE 100 -> 400."""
    out = {}
    for solver in SECOND_ORDER:
        spec = cresshift.SOLVERS[solver]
        errs = [rms_error(case, solver, n, "auto", None, {})[0] for n in ORDER_NFES]
        steps = [spec.points_for_nfe(n) - 1 for n in ORDER_NFES]
        grids = dict.fromkeys(str(spec.auto_grid(case[0].schedule, spec.points_for_nfe(n))) for n in ORDER_NFES)
        out[solver] = dict(errors=errs, order=float(-np.polyfit(np.log(steps), np.log(errs), 1)[0]),
                           grid=" / ".join(grids))
    return out


def overhead(solver: str, steps: int = 50, repeats: int = 3) -> float:
    """Milliseconds per step spent outside the network on a 1x3x64x64 float32 latent."""
    sched = ExactSchedule(ResShiftSchedule.from_config("realsr-x4-v1"))
    y = torch.randn(1, 3, 64, 64)
    out = torch.randn(1, 3, 64, 64)
    denoiser = lambda x, t: out  # noqa: E731  (a free network)
    nfe = steps * cresshift.SOLVERS[solver].evals_per_step + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample(denoiser, y, sched, solver=solver, nfe=nfe, rho=1.0)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            sample(denoiser, y, sched, solver=solver, nfe=nfe, rho=1.0, generator=torch.Generator().manual_seed(0))
            best = min(best, time.perf_counter() - t0)
    return 1e3 * best / steps


def _cell(rows: list[dict], **match: Any) -> Optional[dict]:
    hit = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return hit[0] if hit else None


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| solver | grid | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
             "|---|---|" + "---|" * len(NFES)]
    for label, _, _ in SOLVERS:
        for glabel, _, _ in GRIDS:
            cells = []
            for n in NFES:
                hit = _cell(rows, solver=label, grid=glabel, nfe_budget=n)
                cells.append("–" if hit is None else f"{hit['rms']:.2e}" + ("" if hit["nfe"] == n else f" ({hit['nfe']})"))
            lines.append(f"| {label} | {glabel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_grids(results: dict[str, list[dict]], nfes: tuple[int, ...] = (4, 5, 6, 8, 15)) -> str:
    """Per case and solver: the best fixed grid at each NFE and how far ``auto`` is from it."""
    lines = ["### Best grid per solver and NFE (auto's error / the best grid's)", "",
             "| case | solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for case, rows in results.items():
        for label, _, _ in SOLVERS:
            cells = []
            for n in nfes:
                cands = [r for r in rows if r["solver"] == label and r["nfe_budget"] == n and r["grid"] != "auto"]
                auto = _cell(rows, solver=label, grid="auto", nfe_budget=n)
                if not cands or auto is None:
                    cells.append("–")
                    continue
                best = min(cands, key=lambda r: r["rms"])
                cells.append(f"{best['grid']} {best['rms']:.1e} ({auto['rms'] / best['rms']:.2f})")
            lines.append(f"| {case} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(value: float) -> str:
    """Two decimals, or two significant digits below 0.01 (a tuned solver can be 1000x better)."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1e}"


def targets(results: dict[str, list[dict]], order: dict[str, dict], opt: Optional[dict[str, list[dict]]] = None) -> str:
    lines = ["### Targets (issue 13)", "", "| case | Euler rho=1 @ NFE 15 | best fixed grid @ NFE 5 | ratio | "
             "best optimised grid @ NFE 5 (held-out) | ratio | target <= 0.5 |", "|---|---|---|---|---|---|---|"]
    for case, rows in results.items():
        euler15 = _cell(rows, solver="euler", grid="rho 1", nfe_budget=15)["rms"]
        best5 = min((r for r in rows if r["nfe_budget"] == 5), key=lambda r: r["rms"])
        cells = [f"{case} | {euler15:.2e} | {best5['solver']}, {best5['grid']}: {best5['rms']:.2e} | "
                 f"{_ratio(best5['rms'] / euler15)}"]
        best = best5["rms"]
        o5 = [r for r in (opt or {}).get(case, []) if r["nfe_budget"] == 5]
        if o5:
            bo = min(o5, key=lambda r: r["rms"])
            cells.append(f"{bo['solver']}, optimised: {bo['rms']:.2e} | {_ratio(bo['rms'] / euler15)}")
            best = min(best, bo["rms"])
        else:
            cells.append("– | –")
        cells.append("met" if best <= 0.5 * euler15 else "not met")
        lines.append("| " + " | ".join(cells) + " |")
    if opt:
        lines += ["", f"Optimised grids at NFE {', '.join(map(str, OPTIMISED_NFES))}: `optimize_grid` defaults (tuned: "
                  "`optimize_solver` defaults, grid and coefficients), fitted on "
                  f"calibration samples (prior seed {CALIBRATION_SEED}), errors on the evaluation samples (seed 1), "
                  "next to the same solver's best fixed grid on the evaluation samples (tuned: with its default "
                  "coefficients, the dpmpp-2m (lambda=-log sigma~) rows):", "",
                  "| case | solver | NFE | best fixed grid | its error | optimised (held-out) | ratio | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for case, orows in opt.items():
            for r in orows:
                label = FIXED_LABEL.get(r["solver"], r["solver"])
                fixed = [x for x in results[case] if x["solver"] == label and x["nfe_budget"] == r["nfe_budget"]
                         and x["grid"] != "auto"]
                bf = min(fixed, key=lambda x: x["rms"])
                lines.append(f"| {case} | {r['solver']} | {r['nfe_budget']} | {bf['grid']} | {bf['rms']:.2e} | {r['rms']:.2e} | "
                             f"{_ratio(r['rms'] / bf['rms'])} | {r['seconds']:.0f} |")
    lines += ["", f"Convergence order, Gaussian on the exact schedule, default grid, NFE {ORDER_NFES[0]} -> "
              f"{ORDER_NFES[-1]} (target >= 1.9):", "",
              "| solver | auto grid | " + " | ".join(f"NFE {n}" for n in ORDER_NFES) + " | order |",
              "|---|---|" + "---|" * len(ORDER_NFES) + "---|"]
    for solver, o in order.items():
        lines.append(f"| {solver} | {o['grid']} | " + " | ".join(f"{e:.2e}" for e in o["errors"]) + f" | {o['order']:.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path, opt: Optional[dict[str, list[dict]]] = None) -> bool:
    """Per case: each solver on its auto grid, Euler on rho = 1, and the optimised rows (stars), error against NFE."""
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        for label, _, _ in SOLVERS:
            pts = sorted((r["nfe"], r["rms"]) for r in rows if r["solver"] == label and r["grid"] == "auto")
            ax.loglog(*zip(*pts), marker="o", ms=3, label=f"{label} (auto)")
        pts = sorted((r["nfe"], r["rms"]) for r in rows if r["solver"] == "euler" and r["grid"] == "rho 1")
        ax.loglog(*zip(*pts), "k--", lw=1, label="euler, rho 1")
        for r in (opt or {}).get(name, []):
            ax.loglog([r["nfe"]], [r["rms"]], marker="*", ms=9, ls="none",
                      color="k" if r["solver"] == "tuned" else "0.6",
                      label="tuned, optimised" if r["solver"] == "tuned" else None)
        if (opt or {}).get(name):
            ax.loglog([], [], marker="*", ms=9, ls="none", color="0.6", label="other solvers, optimised grid")
        ax.set_xticks(NFES)
        ax.set_xticklabels([str(n) for n in NFES])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error vs exact solution")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/solver_accuracy")
    ap.add_argument("--samples", type=int, default=256, help="Gaussian samples")
    ap.add_argument("--dim", type=int, default=64, help="Gaussian dimensions")
    ap.add_argument("--mix-samples", type=int, default=64)
    ap.add_argument("--mix-dim", type=int, default=16)
    ap.add_argument("--calib-samples", type=int, default=1024,
                    help="calibration samples of the optimised rows (both problems)")
    ap.add_argument("--empirical", action="store_true", help="also the empirical patch problem")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-optimised", action="store_true", help="skip the optimised-grid rows")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cases = make_cases(args.samples, args.dim, args.mix_samples, args.mix_dim, args.empirical, args.calib_samples)
    results = {}
    for name, case in cases.items():
        t0 = time.perf_counter()
        results[name] = accuracy(case)
        print(f"{name}: {len(results[name])} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    opt: dict[str, list[dict]] = {}
    if not args.no_optimised:
        for name, case in cases.items():
            t0 = time.perf_counter()
            opt[name] = optimised(case)
            print(f"{name}: optimised grids in {time.perf_counter() - t0:.0f} s", flush=True)
    order = orders(cases["Gaussian, exact"])
    over = {s: overhead(s) for s in ["euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "ipndm", "sde"]}
    over_line = "Solver overhead per step, 1x3x64x64 float32 latent, network excluded: " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in over.items())
    md = [targets(results, order, opt), best_grids(results), over_line] + [markdown(r, n) for n, r in results.items()]
    env = dict(torch=torch.__version__, cresshift=cresshift.__version__, machine=platform.machine(),
               processor=platform.processor(), threads=torch.get_num_threads(), args=vars(args))
    (out / "solver_accuracy.md").write_text("\n\n".join(md) + "\n")
    (out / "solver_accuracy.json").write_text(json.dumps(dict(env=env, results=results, optimised=opt, orders=order,
                                                              overhead_ms=over), indent=1))
    plotted = plot(results, out / "solver_accuracy.png", opt)
    print("\n\n".join(md))
    print(f"wrote {out}/solver_accuracy.md, .json" + (", .png" if plotted else " (no matplotlib: no plot)"))


if __name__ == "__main__":
    main()
