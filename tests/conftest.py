"""Shared pytest setup: firmware tests (tests/firmware/test_*.py) run inside the MicroPython Unix port."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))  # pure firmware modules double as host-side oracles

pytest_plugins = ["meterkit.testing.mpytest", "meterkit.testing.pgplugin"]

# CI runs the property tests on hypothesis's fixed example sequence, so a red build is reproducible and never a
# roll of the dice; locally (METERKIT_HYPOTHESIS unset) they explore fresh examples every run.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("METERKIT_HYPOTHESIS") == "ci":
        settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


@pytest.fixture
def haproxy_available():
    """Tests that start a real HAProxy: skipped without it, failed where METERKIT_SERVERS=require (CI)."""
    from meterkit.testing.haproxy import HAProxyUnavailable, haproxy_bin
    from meterkit.testing.pgplugin import server_missing

    try:
        haproxy_bin()
    except HAProxyUnavailable as e:
        server_missing("HAProxy", str(e))


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto on a free loopback port with users meterkit, homeassistant and guest (no rights) and the
    ACL of docs/home-assistant.md: skipped without it, failed where METERKIT_SERVERS=require (CI)."""
    from meterkit.testing.mosquitto import Mosquitto, MosquittoUnavailable, acl_text
    from meterkit.testing.pgplugin import server_missing

    broker = Mosquitto(tmp_path / "mosquitto", {"meterkit": "conc-pw", "homeassistant": "ha-pw", "guest": "guest-pw"},
                       acl_text() + "\nuser guest\ntopic read meterkit/#\n")
    try:
        broker.start()
    except MosquittoUnavailable as e:
        server_missing("Mosquitto", str(e))
    try:
        yield broker
    finally:
        broker.stop()
