"""Shared pytest setup: firmware tests (tests/firmware/test_*.py) run inside the MicroPython Unix port."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))  # pure firmware modules double as host-side oracles

pytest_plugins = ["meterkit.testing.mpytest"]
