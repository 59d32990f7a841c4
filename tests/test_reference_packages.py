"""A missing reference package skips a parity test locally and fails it in CI."""

import pytest

from reference_packages import require

MISSING = "no_such_reference_package"


def test_a_present_package_is_imported(monkeypatch):
  monkeypatch.setenv("CI", "true")
  assert require("json").dumps([]) == "[]"


def test_a_missing_package_skips_outside_ci(monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match=MISSING):
    require(MISSING)


def test_a_missing_package_fails_in_ci(monkeypatch):
  monkeypatch.setenv("CI", "true")
  with pytest.raises(
      pytest.fail.Exception, match=f"CI=true needs the reference package '{MISSING}'"
  ):
    require(MISSING)
