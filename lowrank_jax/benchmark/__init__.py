"""The paper's benchmark: grids of training runs, their results table and plots."""

from lowrank_jax.benchmark.grid import Cell, Grid
from lowrank_jax.benchmark.report import write_report
from lowrank_jax.benchmark.runner import job_lines, run_grid
from lowrank_jax.renamed_modules import renamed_modules

__getattr__ = renamed_modules(__name__, {"sweep": "rate_search"})

__all__ = ["Cell", "Grid", "job_lines", "run_grid", "write_report"]
