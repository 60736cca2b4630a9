"""The store on a PostgreSQL database, shared by several concentrators (psycopg 3).

    schema      the tables, MIGRATIONS (ordered, append only; v1 = SQLite's v8), migrate(), schema_version()
    base        the connection (autocommit; the first write opens a transaction), Row, what the tables share
    partitions  readings partitioned by month of meter time: made as needed, dropped by retention
    registry, evidence, profile, logs, gaps, outages, commands, counting, dr, keys, readout: as in sqlite/

``PostgresStore`` is all of them: it implements meterkit.store.api.Store with the same semantics as
SQLiteStore (meterkit.store.rows holds what the two share). Batches go in as one statement each
(INSERT ... SELECT FROM unnest(arrays)) or executemany (psycopg pipelines it).
"""

from __future__ import annotations

from meterkit.store.postgres.commands import CommandTables
from meterkit.store.postgres.counting import CountingTables
from meterkit.store.postgres.dr import DRTables
from meterkit.store.postgres.evidence import EvidenceTables
from meterkit.store.postgres.gaps import GapsTable
from meterkit.store.postgres.keys import KeyTable
from meterkit.store.postgres.logs import LogTables
from meterkit.store.postgres.outages import OutagesTable
from meterkit.store.postgres.profile import ProfileTable
from meterkit.store.postgres.readout import ReadOutQueries
from meterkit.store.postgres.registry import RegistryTable
from meterkit.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]


class PostgresStore(RegistryTable, EvidenceTables, ProfileTable, LogTables, GapsTable, OutagesTable, CommandTables,
                    CountingTables, DRTables, ReadOutQueries, KeyTable):
    """The head-end store on a PostgreSQL database.

    PostgresStore(url, create=True, readonly=False, connect_timeout_s=10): url is a postgresql:// URL of an
    existing database (created by the operator); create=False refuses one without a meterkit schema, readonly
    never writes (and refuses an old schema). StoreError when it cannot be used.
    """
