"""The projection engine of the GaLore family (private: no user calls these modules directly).

GaLore, Fira, APOLLO and GoLore (``lowrank_jax.optim.<method>``) are each a method hook on
one engine, :func:`~lowrank_jax.optim._projection.lowrank_adam.scale_by_projected_method`:
Adam on the projected gradients ``R = P^T G`` of the leaves a mask selects, the references'
Adam on the others (arXiv 2505.22922, methods survey). Its parts:

* ``lowrank_adam``: the projected Adam step and the method hook it calls;
* ``masking``: which leaves are projected, and the routing of the others to dense Adam;
* ``projection``: a leaf's matrix layout (side rule, dimension numbers), ``P^T G`` and ``P X``;
* ``projector_bases``: how a projector is recomputed (SVD, eigh, randomized, Gaussian, ...);
* ``projector_refresh``: the refresh of due matrices and the moment policy at a refresh;
* ``refresh_schedule``: which matrices are due at a step, and their random keys;
* ``distributed_refresh``: spreading the refreshes over the devices of a mesh;
* ``matrix_sharding``: gathering a sharded leaf into whole matrices for a decomposition;
* ``leaf_groups``: stacking the leaves of equal layout into one batch;
* ``threefry_normal``: the Gaussian projector's draws, regenerated from their key.

The public names among them (:class:`~lowrank_jax.optim.ScaleByLowRankAdamState`,
:func:`~lowrank_jax.optim.route`, :class:`~lowrank_jax.optim.MatrixDimensionNumbers`, ...)
are exported by :mod:`lowrank_jax.optim`.
"""
