"""A long simulated run billed twice: `meterkit billcheck` (being written)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit billcheck` (filled in by the bill-check work)."""
