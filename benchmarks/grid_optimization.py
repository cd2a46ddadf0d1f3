"""Optimised grids (``cresshift.grids.optimize_grid``) against fixed grids, on held-out samples.

Solver ``tuned`` is optimised with ``cresshift.solvers.optimize.optimize_solver`` (its grid and its
coefficients, on ``--tuned-calib`` calibration samples: more parameters need more samples); its fixed
grids run with its default coefficients, i.e. DPM-Solver++(2M) in lambda = -log sigma~.

Part ``analytic``: the Gaussian problem (``cresshift.testing.GaussianProblem``; the mixture too
when ``cresshift.testing.GaussianMixtureProblem`` exists) on realsr-v1's exact schedule and its
exp-alpha fit. Each solver's grid is optimised at NFE 4, 5, 6 on calibration samples (seed 1)
against the exact solution and evaluated on other samples (seed 2) next to the best fixed grid
for the same solver (rho in t for every rho in ``RHOS``, lambda, karras, log eta graded with every
rho in ``LOG_ETA_RHOS``; the best chosen on the held-out samples themselves, which favours the
fixed grids).

Part ``bundled``: the bundled model (solver ``--solver``, its rho-1, lambda and auto grids against
the optimised one; with ``--tuned`` also the tuned solver, grid and coefficients), grids optimised (``optimize_grid``'s default starts, ``--max-evals`` runs) on calibration tiles cut from the
validation photograph (``cresshift.data.photos.validation_tiles``: coffee, never a test tile),
evaluated on the 18 held-out test tiles: PSNR-Y, SSIM-Y, LPIPS (n/a without its weights) and
RMS distance of the output to a converged reference (adaptive dopri5) from the same x_T.
The test reference is computed before the grids are run; stages print as they finish and are stored in ``--out`` so an interrupted run resumes.

    python benchmarks/grid_optimization.py analytic
    python benchmarks/grid_optimization.py bundled --out benchmarks/results/grid_optimization
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cresshift.grids import karras_grid, lambda_grid, log_eta_grid, optimize_grid, rho_grid
from cresshift.schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule
from cresshift.solvers import SOLVERS, sample
from cresshift.solvers.optimize import grid_error, optimize_solver, prior_sample

RHOS = (1.0, 2.0, 4.0, 7.0, -4.0, -8.0)
LOG_ETA_RHOS = (1.0, 1.5, 2.0, 3.0)


def fixed_grids(n: int, schedule: Any) -> dict[str, np.ndarray]:
    grids = {f"rho {rho:g}": rho_grid(n, rho, schedule.t_min) for rho in RHOS}
    grids["lambda"] = lambda_grid(n, schedule)
    grids["karras"] = karras_grid(n, schedule)
    grids.update({f"logeta {rho:g}": log_eta_grid(n, schedule, rho) for rho in LOG_ETA_RHOS})
    return grids


# --- analytic ------------------------------------------------------------------------------------
def problems(dim: int) -> list[tuple[str, Any, Any]]:
    """(label, schedule, problem) for every analytic problem x schedule."""
    import cresshift.testing as testing

    discrete = ResShiftSchedule.from_config("realsr-x4-v1")
    out = []
    for name, sched in (("exact", ExactSchedule(discrete)), ("exp-fit", ExpAlphaSchedule.fit(discrete, warn=False))):
        out.append((f"Gaussian, {name}", sched, testing.GaussianProblem(sched, dim=dim, seed=0)))
        if hasattr(testing, "GaussianMixtureProblem"):
            out.append((f"mixture, {name}", sched, testing.GaussianMixtureProblem(sched, dim=dim, seed=0)))
    return out


def exact_batch(problem: Any, schedule: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, x_T, the exact output) for n samples of the problem's prior."""
    x_T = problem.prior(n, seed=seed)
    y = problem.y.expand_as(x_T).clone()
    if hasattr(problem, "exact_output"):
        ref = problem.exact_output(x_T, 1.0, schedule.t_min)
    else:
        ref = problem.reference_output(x_T, 1.0, schedule.t_min)
    return y, x_T, ref


def analytic(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, sched, prob in problems(args.dim):
        calib, held = exact_batch(prob, sched, args.calib, 1), exact_batch(prob, sched, args.held_out, 2)
        for solver in args.solvers:
            for nfe in args.nfes:
                if nfe < SOLVERS[solver].min_nfe:
                    continue
                n = SOLVERS[solver].points_for_nfe(nfe)
                t0 = time.perf_counter()
                tuned = {}
                if solver == "tuned":
                    y_c, x_c, ref_c = exact_batch(prob, sched, args.tuned_calib, 1)
                    ts, coef = optimize_solver(prob.denoiser, y_c, sched, nfe=nfe, x_T=x_c, reference=ref_c)
                    tuned = dict(coefficients=coef)
                else:
                    ts = optimize_grid(prob.denoiser, calib[0], sched, solver=solver, nfe=nfe, x_T=calib[1],
                                       reference=calib[2])
                seconds = time.perf_counter() - t0

                def err(grid: np.ndarray, **options: Any) -> float:
                    return grid_error(prob.denoiser, held[0], sched, grid, solver=solver, nfe=nfe, x_T=held[1],
                                      reference=held[2], **options)
                fixed = {name: err(g) for name, g in fixed_grids(n, sched).items()}
                best = min(fixed, key=fixed.get)
                opt = err(ts, **tuned)
                rows.append(dict(problem=label, solver=solver, nfe=nfe, best_fixed=best, best_fixed_error=fixed[best],
                                 optimised_error=opt, ratio=opt / fixed[best], seconds=seconds, ts=ts.tolist(),
                                 **{k: v.tolist() for k, v in tuned.items()}))
                print(f"{label:20s} {solver:9s} NFE {nfe}: optimised {opt:.3e}  best fixed ({best}) "
                      f"{fixed[best]:.3e}  ratio {opt / fixed[best]:.2f}  [{seconds:.1f} s]", flush=True)
    return rows


def analytic_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| problem | solver | NFE | best fixed grid | its error | optimised | ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] >= 0.01 else f"{r['ratio']:.1e}"
        lines.append(f"| {r['problem']} | {r['solver']} | {r['nfe']} | {r['best_fixed']} | {r['best_fixed_error']:.2e} "
                     f"| {r['optimised_error']:.2e} | {ratio} |")
    return "\n".join(lines)


# --- bundled -------------------------------------------------------------------------------------
class Stages:
    """Results of finished stages in OUT/stages.json, so a rerun resumes (tensors as .pt beside it)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "stages.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = compute()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
        return self.data[key]

    def tensor(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        path = self.out / f"{key}.pt"
        if not path.is_file():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(compute(), tmp)
            tmp.replace(path)
        return torch.load(path, weights_only=True)


def tiles_batch(pipe: Any, hrs: list[torch.Tensor], seed: int) -> dict[str, Any]:
    """y, lq, x_T (seeded) and HR of a batch of HR tiles, LR by bicubic."""
    from cresshift.data.io import bicubic_down

    hr = torch.stack(hrs)
    lr = torch.stack([bicubic_down(h, pipe.sf) for h in hrs])
    y, lq, _ = pipe.shift_target(lr)
    g = torch.Generator().manual_seed(seed)
    x_T = prior_sample(y, pipe.schedule, g)
    return dict(y=y, lq=lq, x_T=x_T, hr=hr, denoiser=pipe.network_denoiser(y, lq))


def bundled(args: argparse.Namespace) -> list[dict[str, Any]]:
    from cresshift.bench import bundled_testset
    from cresshift.data.io import load_image
    from cresshift.data.photos import validation_tiles
    from cresshift.metrics import LPIPSMetric, evaluate_pair
    from cresshift.models.pipeline import load_pipeline
    from cresshift.solvers.optimize import reference_output

    torch.set_grad_enabled(False)
    stages = Stages(Path(args.out))
    pipe = load_pipeline(args.model, cpu_bf16=())
    sched = pipe.schedule
    calib = tiles_batch(pipe, validation_tiles()[: args.calib_tiles], seed=1)
    test = tiles_batch(pipe, [load_image(p) for p in sorted(bundled_testset().glob("*.png"))], seed=2)
    lpips = LPIPSMetric("alex")
    solver = args.solver

    # Stage 1: the calibration reference and one optimised grid per NFE.
    ref_c = stages.tensor("reference_calibration", lambda: reference_output(
        calib["denoiser"], calib["y"], sched, calib["x_T"], rtol=args.reference_rtol))
    grids: dict[int, dict[str, list[float]]] = {}
    tuned: dict[int, dict[str, Any]] = {}  # --tuned: the tuned solver's grid and coefficients per NFE
    for nfe in args.nfes:
        n = SOLVERS[solver].points_for_nfe(nfe)
        fixed = {"rho 1": rho_grid(n, 1.0, sched.t_min), "lambda": lambda_grid(n, sched),
                 "auto": SOLVERS[solver].grid(sched, nfe)}

        def optimise() -> dict[str, Any]:
            t0 = time.perf_counter()
            errs = {k: grid_error(calib["denoiser"], calib["y"], sched, g, solver=solver, nfe=nfe, x_T=calib["x_T"],
                                  reference=ref_c) for k, g in fixed.items()}
            # optimize_grid's own starts (the auto, lambda, karras, log-eta and rho grids), best ones searched
            ts = optimize_grid(calib["denoiser"], calib["y"], sched, solver=solver, nfe=nfe, x_T=calib["x_T"],
                               reference=ref_c, max_evals=args.max_evals)
            opt = grid_error(calib["denoiser"], calib["y"], sched, ts, solver=solver, nfe=nfe, x_T=calib["x_T"],
                             reference=ref_c)
            return dict(ts=ts.tolist(), calibration_errors={**errs, "optimised": opt},
                        seconds=time.perf_counter() - t0)
        res = stages.get(f"optimise nfe={nfe}", optimise)
        print(f"NFE {nfe}: calibration RMS {res['calibration_errors']}  [{res['seconds']:.0f} s] "
              f"grid {np.round(res['ts'], 4).tolist()}", flush=True)
        grids[nfe] = {**{k: g.tolist() for k, g in fixed.items()}, "optimised": res["ts"]}
        if args.tuned:
            def tune() -> dict[str, Any]:
                t0 = time.perf_counter()
                ts, coef = optimize_solver(calib["denoiser"], calib["y"], sched, nfe=nfe, x_T=calib["x_T"],
                                           reference=ref_c, max_evals=args.tuned_max_evals,
                                           iterations=args.tuned_iterations)
                err = grid_error(calib["denoiser"], calib["y"], sched, ts, solver="tuned", nfe=nfe, x_T=calib["x_T"],
                                 reference=ref_c, coefficients=coef)
                return dict(ts=ts.tolist(), coefficients=coef.tolist(), calibration_error=err,
                            seconds=time.perf_counter() - t0)
            tuned[nfe] = stages.get(f"tune nfe={nfe}", tune)
            print(f"NFE {nfe}: tuned calibration RMS {tuned[nfe]['calibration_error']:.3e}  "
                  f"[{tuned[nfe]['seconds']:.0f} s]", flush=True)

    # Stage 2: the converged reference on the test tiles; stage 3: every grid on them.
    ref_t = None if args.no_rms else stages.tensor("reference_test", lambda: reference_output(
        test["denoiser"], test["y"], sched, test["x_T"], rtol=args.reference_rtol))
    rows = []
    for nfe in args.nfes:
        runs = {name: (solver, ts, {}) for name, ts in grids[nfe].items()}
        if nfe in tuned:  # the tuned solver's fixed grids (its default coefficients), then its fitted record
            n = SOLVERS["tuned"].points_for_nfe(nfe)
            runs.update({f"tuned {name}": ("tuned", g.tolist(), {}) for name, g in (
                ("rho 1", rho_grid(n, 1.0, sched.t_min)), ("lambda", lambda_grid(n, sched)),
                ("auto", SOLVERS["tuned"].grid(sched, nfe)))})
            runs["tuned"] = ("tuned", tuned[nfe]["ts"], dict(coefficients=tuned[nfe]["coefficients"]))
        for name, (row_solver, ts, extra) in runs.items():
            key = f"test nfe={nfe} {name}"
            x = stages.tensor(key.replace(" ", "_"), lambda: sample(test["denoiser"], test["y"], sched,
                                                                    solver=row_solver, nfe=nfe, ts=ts,
                                                                    x_T=test["x_T"], **extra).x)
            vals = {k: float(v.mean()) for k, v in evaluate_pair(x.clamp(-1, 1), test["hr"], lpips).items()}
            vals["rms"] = float("nan") if ref_t is None else float(torch.sqrt(torch.mean((x - ref_t) ** 2)))
            rows.append(dict(nfe=nfe, grid=name, **vals))
            print(f"NFE {nfe} {name:9s} " + "  ".join(f"{k} {v:.5f}" for k, v in vals.items()), flush=True)
    return rows


def bundled_table(rows: list[dict[str, Any]], lpips_available: bool) -> str:
    lines = ["| NFE | grid | PSNR-Y ↑ | SSIM-Y ↑ | LPIPS-alex ↓ | RMS to reference ↓ |", "|---|---|---|---|---|---|"]
    for r in rows:
        lp = f"{r['lpips']:.4f}" if lpips_available and r.get("lpips") is not None else "n/a"
        lines.append(f"| {r['nfe']} | {r['grid']} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {lp} | {r['rms']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["analytic", "bundled"])
    ap.add_argument("--out", default="benchmarks/results/grid_optimization")
    ap.add_argument("--nfes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="[analytic: 4,5,6; bundled: 3,4,5,6]")
    ap.add_argument("--solvers", type=lambda s: s.split(","),
                    default=["euler", "heun", "ddim", "dpmpp-2m", "dpmpp-3m", "ipndm", "tuned"])
    ap.add_argument("--dim", type=int, default=64, help="analytic: dimensions")
    ap.add_argument("--calib", type=int, default=64, help="analytic: calibration samples (seed 1)")
    ap.add_argument("--tuned-calib", type=int, default=256, help="analytic: calibration samples of solver tuned (seed 1)")
    ap.add_argument("--held-out", type=int, default=512, help="analytic: held-out samples (seed 2)")
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--solver", default="dpmpp-2m", help="bundled: the solver whose grids are compared")
    ap.add_argument("--calib-tiles", type=int, default=4, help="bundled: validation tiles to optimise on")
    ap.add_argument("--max-evals", type=int, default=30, help="bundled: Nelder-Mead sampler runs per NFE")
    ap.add_argument("--reference-rtol", type=float, default=1e-5,
                    help="bundled: adaptive reference rtol = atol (1e-3 leaves an RMS error of ~2-5e-4, the size of "
                         "the NFE-6 errors being compared)")
    ap.add_argument("--no-rms", action="store_true", help="bundled: skip the test reference (no RMS column)")
    ap.add_argument("--tuned", action="store_true", help="bundled: also the tuned solver (optimize_solver) per NFE")
    ap.add_argument("--tuned-max-evals", type=int, default=20, help="bundled: optimize_solver's max_evals")
    ap.add_argument("--tuned-iterations", type=int, default=10, help="bundled: optimize_solver's L-BFGS iterations")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.part == "analytic":
        args.nfes = args.nfes or [4, 5, 6]
        rows = analytic(args)
        table = analytic_table(rows)
    else:
        args.nfes = args.nfes or [3, 4, 5, 6]
        rows = bundled(args)
        from cresshift.metrics import LPIPSMetric

        table = bundled_table(rows, LPIPSMetric("alex").available)
    print()
    print(table)
    print(f"\n{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {time.perf_counter() - t0:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.part}.json").write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    (out / f"{args.part}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
