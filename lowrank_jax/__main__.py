"""``python -m lowrank_jax`` is the ``lowrank-jax`` command."""

import sys

from lowrank_jax.cli import main

sys.exit(main())
