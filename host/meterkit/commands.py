"""Operator commands to meters through the concentrator: `meterkit command ...` (being written)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `meterkit command` (filled in by the command-queue work)."""
