"""Why a bill cannot be made: a price file that cannot be used, data that cannot make the bill."""

from __future__ import annotations


class PriceError(ValueError):
    """A price file that cannot be used; the message names the file and the failing element."""


class BillingError(Exception):
    """The data cannot make this bill (no snapshot and no profile, a register going backwards ...)."""
