"""The store on a PostgreSQL database, shared by several concentrators (psycopg 3).

    schema      the tables, MIGRATIONS (ordered, append only; v1 = SQLite's v8, v2 = v9), migrate(), schema_version()
    connect     connecting (which failures are worth another try), pg_text, Row
    base        the connection (autocommit; the first write opens a transaction; lost and found again), what
                the table groups need (their ? as %s, = ANY(array), ON CONFLICT DO NOTHING, FOR UPDATE, jsonb)
    partitions  readings partitioned by month of meter time: made as needed, dropped by retention
    bulk        the ingest's batches as one statement each (INSERT/UPDATE ... FROM unnest(binary arrays))

``PostgresStore`` is the table groups (meterkit.store.tables, shared with SQLite) over that connection, with the
bulk writes of its own: it implements meterkit.store.api.Store with the same semantics as SQLiteStore.
"""

from __future__ import annotations

from meterkit.store.postgres.bulk import BulkWrites
from meterkit.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from meterkit.store.tables import TableGroups

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]


class PostgresStore(BulkWrites, TableGroups):
    """The head-end store on a PostgreSQL database.

    PostgresStore(url, create=True, readonly=False, connect_timeout_s=10): url is a postgresql:// URL of an
    existing database (created by the operator); create=False refuses one without a meterkit schema, readonly
    never writes (and refuses an old schema). StoreError when it cannot be used.
    """
