"""The reference packages of the parity tests: a skip where one is missing, a failure in CI.

A developer without torch or an author's package still runs the rest of the suite (the math
stays guarded by ``tests/optim/test_math_by_hand.py``); CI (``CI=true``) must run every
parity test, so there a missing package fails the test instead of skipping it.
"""

import importlib
import os

import pytest


def require(name: str):
  """``import name``; if it is missing, skip the test, or fail it when ``CI=true``."""
  if os.environ.get("CI") != "true":
    return pytest.importorskip(name)
  try:
    return importlib.import_module(name)
  except ImportError as error:
    pytest.fail(f"CI=true needs the reference package {name!r}: {error}", pytrace=False)
