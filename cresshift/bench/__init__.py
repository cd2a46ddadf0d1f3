"""NFE-matched benchmark sweeps: rows of (solver, rho, NFE, options) x images -> metric tables.

The default sweep is the paper's Table 1 layout: a ``Baseline`` row (the Markov sampler at
NFE = T on the baseline model's discrete chain), then Euler and Heun for rho in
{1, 4, 8, -4, -8} at NFE 15 (design §7: Heun there has 8 grid points, 7 steps).

Seeds: image ``i`` of the sorted dataset (its index before ``limit`` and sharding) runs with
seed ``seed + i`` in every row, one image per pipeline call, so rows differ only by the solver
and no result depends on ``limit``, on the number of processes or on an interruption. With
``seeds = K`` every image runs K times (draws k = 0..K-1; draw 0 is ``seed + i``, draw k > 0 a
hash of (seed, i, k): ``draw_seed``), the same K seeds in every row.

Uncertainty (``cresshift/stats.py``): every metric cell is the mean with a 95 % percentile
bootstrap interval over images (seeds nested), and every row is compared with the Baseline
row by the paired bootstrap of the per-(image, seed) differences; a cell is marked ``*`` when
that interval excludes zero.

Resumable: every (row, image) result is appended to ``OUT/results.jsonl`` (rank r > 0:
``results.rank<r>.jsonl``) as soon as it is computed, flushed and fsynced; a rerun with the
same ``OUT`` skips what is there (``OUT/run.json`` guards against mixing different runs).
Under ``torchrun`` images are sharded across ranks (``i % world == rank``) and the new
records are gathered on rank 0 (gloo on CPU, NCCL on CUDA), which builds the table and writes
``results.json``, ``table.md``, ``table.csv`` and one plot per metric (matplotlib, optional).

Modules: ``rows`` (rows and the plan), ``data`` (dataset, bundled tiles, seeds, weight hashes),
``settings`` (settings, metric columns, the result), ``store`` (the resumable JSONL store),
``run`` (the loop, sharded under torchrun), ``summary`` (means, intervals, paired differences),
``report`` (Markdown, CSV, results.json, plots). Every name is re-exported here.
"""
from .data import Item, bundled_testset, dataset, draw_seed, load_item, weights_digest
from .report import (command_line, footer, headings, perception_distortion_plot, result_json, table_cells, to_csv,
                     to_markdown, write_outputs)
from .rows import (BICUBIC, GRIDLESS, TABLE1_NFE, TABLE1_RHOS, TABLE1_SOLVERS, Plan, Row, baseline_name, bicubic_row,
                   check_rows, load_pipelines, plan, requested_rows, row_grid, sweep_rows, table1_rows)
from .run import Progress, bicubic_sr, run_bench
from .settings import METRICS, BenchResult, BenchSettings
from .store import RecordStore, prepare_out, record_key
from .summary import INTERVALS_NOTE, summarize

__all__ = ["Row", "BenchSettings", "Item", "BenchResult", "Plan", "TABLE1_RHOS", "TABLE1_SOLVERS", "TABLE1_NFE",
           "table1_rows", "sweep_rows", "check_rows", "dataset", "bundled_testset", "load_pipelines", "plan",
           "run_bench", "summarize", "write_outputs", "to_markdown", "to_csv", "METRICS", "draw_seed",
           "perception_distortion_plot"]
