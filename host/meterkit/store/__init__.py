"""The head-end's database: what meters reported (the signed frames as evidence, and the records decoded from
them), the registry, delivery state, gaps, outages, commands and counts.

    api        the interface: small protocols by what they keep (Registry, Delivery, Evidence, Profile, Events,
               Billing, Outages, Commands, Counting, DemandResponse, ReadOuts, Transactions); Store is their
               union
    records    the store's records (MeterRecord, GapRecord, QueuedCommand, IntervalRecord, ...)
    sqlite/    the SQLite implementation: schema and migrations, one module per group of tables

open_store(path) opens a store; callers use it through api.Store and never see SQL (tests too, but for their one
helper, meterkit.testing.sqlfile: an older schema, a tampered row, a NULL column, a pragma).

May import: meterkit.wire and the standard library; sqlite3 only inside this package. Nothing else of meterkit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from meterkit.store.api import StoreError

if TYPE_CHECKING:
    from meterkit.store.api import Store

__all__ = ["StoreError", "open_store"]


def open_store(path: str | os.PathLike, *, create: bool = True, readonly: bool = False,
               synchronous: str = "FULL") -> Store:
    """The store in a database file: created and migrated as needed (create=False: it must exist; readonly:
    never written, and refused unless its schema is current). StoreError when it cannot be used."""
    from meterkit.store.sqlite import SQLiteStore

    return SQLiteStore(path, create=create, readonly=readonly, synchronous=synchronous)
