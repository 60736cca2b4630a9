"""Shared pytest setup: firmware tests (tests/firmware/test_*.py) run inside the MicroPython Unix port."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))  # pure firmware modules double as host-side oracles

pytest_plugins = ["meterkit.testing.mpytest"]

# CI runs the property tests on hypothesis's fixed example sequence, so a red build is reproducible and never a
# roll of the dice; locally (METERKIT_HYPOTHESIS unset) they explore fresh examples every run.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("METERKIT_HYPOTHESIS") == "ci":
        settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


def needs_server(check, unavailable: type[Exception]) -> None:
    """A test that starts a real server (HAProxy, PostgreSQL, ...): skipped with the reason when it is not
    installed, but a failure where METERKIT_SERVERS=require (CI installs them all: .ci/run)."""
    try:
        check()
    except unavailable as e:
        if os.environ.get("METERKIT_SERVERS") == "require":
            pytest.fail(f"required here (METERKIT_SERVERS=require): {e}")
        pytest.skip(str(e))


@pytest.fixture
def haproxy_available():
    from meterkit.testing.haproxy import HAProxyUnavailable, haproxy_bin

    needs_server(haproxy_bin, HAProxyUnavailable)
