"""The table groups, written once for both databases: each a mixin over the connection (meterkit.store.sqlite.base,
meterkit.store.postgres.base) that answers what base.Tables asks for.

    base       Tables: what a group needs of the connection, the dialect hooks, the helpers all groups share
    registry   meters: the registry, hello data, delivery state (ack watermark, counters)
    evidence   frames (the signed evidence) and readings
    profile    intervals (load-profile rows)
    logs       events and billing snapshots
    gaps, outages, commands (sent, answered, the operator queue, the audit log), counting (rejects, counters)
    dr         demand response: groups, events, the meters each event was queued for
    keys       meter_keys: the head-end key each meter holds
    alerts     the security monitor's alerts (one open alert per rule, meter and source)
    readout    the fleet view and table export

``TableGroups`` is all of them; SQLiteStore and PostgresStore are it over their connection.
"""

from __future__ import annotations

from meterkit.store.tables.alerts import AlertsTable
from meterkit.store.tables.commands import CommandTables
from meterkit.store.tables.counting import CountingTables
from meterkit.store.tables.dr import DRTables
from meterkit.store.tables.evidence import EvidenceTables
from meterkit.store.tables.gaps import GapsTable
from meterkit.store.tables.keys import KeyTable
from meterkit.store.tables.logs import LogTables
from meterkit.store.tables.outages import OutagesTable
from meterkit.store.tables.profile import ProfileTable
from meterkit.store.tables.readout import ReadOutQueries
from meterkit.store.tables.registry import RegistryTable

__all__ = ["TableGroups"]


class TableGroups(RegistryTable, EvidenceTables, ProfileTable, LogTables, GapsTable, OutagesTable, CommandTables,
                  CountingTables, DRTables, ReadOutQueries, KeyTable, AlertsTable):
    """Every table group (the store's methods, but for the connection's own)."""
