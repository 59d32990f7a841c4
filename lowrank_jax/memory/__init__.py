"""The memory report: the paper's count of weights and optimizer state against the program.

Three ways to know what a method costs, from shapes alone (nothing is allocated):

- :mod:`~lowrank_jax.memory.analytic`: the paper's formulas (arXiv 2505.22922, memory accounting), per
  target matrix, summed over a model;
- :mod:`~lowrank_jax.memory.measured`: the bytes of the abstract train state and XLA's memory
  analysis of the compiled train step, per device;
- :mod:`~lowrank_jax.memory.topology`: the step compiled for a pod that is not here (a TPU
  topology, or ``cpu:N``), against the chip's HBM.

:mod:`~lowrank_jax.memory.report` puts the first two side by side, one row per case, and writes
the table, CSV and chart of ``lowrank-jax memory``.
"""
