"""The store on one SQLite file: WAL mode, so `meterkit status` reads while the concentrator writes; with
synchronous=FULL (the default) a returned commit has reached the disk.

    schema     the tables, MIGRATIONS (ordered, append only), migrate(), schema_version()
    base       opening (WAL, synchronous, read-only), transactions, shared column conversions
    registry   meters: the registry, hello data, delivery state (ack watermark, counters)
    evidence   frames (the signed evidence) and readings
    profile    intervals (load-profile rows)
    logs       events and billing snapshots
    gaps, outages, commands (sent, answered, the operator queue, the audit log), counting (rejects, counters)
    dr         demand response: groups, events, the meters each event was queued for
    keys       meter_keys: the head-end key each meter holds
    readout    the fleet view and table export

``SQLiteStore`` is all of them: it implements meterkit.store.api.Store.
"""

from __future__ import annotations

from meterkit.store.sqlite.commands import CommandTables
from meterkit.store.sqlite.counting import CountingTables
from meterkit.store.sqlite.dr import DRTables
from meterkit.store.sqlite.evidence import EvidenceTables
from meterkit.store.sqlite.gaps import GapsTable
from meterkit.store.sqlite.keys import KeyTable
from meterkit.store.sqlite.logs import LogTables
from meterkit.store.sqlite.outages import OutagesTable
from meterkit.store.sqlite.profile import ProfileTable
from meterkit.store.sqlite.readout import ReadOutQueries
from meterkit.store.sqlite.registry import RegistryTable
from meterkit.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]


class SQLiteStore(RegistryTable, EvidenceTables, ProfileTable, LogTables, GapsTable, OutagesTable, CommandTables,
                  CountingTables, DRTables, ReadOutQueries, KeyTable):
    """The head-end store on one SQLite file.

    SQLiteStore(path, create=True, synchronous="FULL", readonly=False, busy_timeout_ms=5000): create=False
    refuses a path that does not exist, readonly opens without write access (and refuses an old schema).
    """
