"""Readings partitioned by the meter's time: RANGE partitions on meter_time, one per UTC month, made as needed
(in the transaction that first stores a reading of that month, so a rolled-back batch leaves none behind), and
dropped by the operator's retention (drop_readings_before)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import psycopg

from meterkit.store.postgres.base import Connection

_UTC = timezone.utc


def month_of(t: int) -> tuple[int, int] | None:
    """[start, end) of the UTC month holding t (UTC seconds), as UTC seconds; None beyond the calendar's years
    1-9999 (such readings go to the default partition, readings_beyond)."""
    try:
        d = datetime.fromtimestamp(t, _UTC)
        start = datetime(d.year, d.month, 1, tzinfo=_UTC)
        end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=_UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return int(start.timestamp()), int(end.timestamp())


def partition_name(start: int) -> str:
    d = datetime.fromtimestamp(start, _UTC)
    return f"readings_y{d.year:04d}m{d.month:02d}"


class ReadingPartitions(Connection):
    def _ensure_partitions(self, times: Iterable[int]) -> None:
        """Make the partitions these meter times need (in the open transaction: under a savepoint each, so a
        concurrent concentrator making the same one costs nothing but a retry of the check)."""
        times = list(times)
        if not times:
            return
        lo, hi = min(times), max(times)
        if any(s <= lo and hi < e for s, e in self._partitions | self._new_partitions):
            return  # the usual batch: all in one month known to have its partition (no month_of per reading)
        for start, end in {month_of(t) for t in times} - {None} - self._partitions - self._new_partitions:
            c = self._begin()
            c.execute("SAVEPOINT partition")
            try:
                c.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF readings "
                          f"FOR VALUES FROM ({start}) TO ({end})")
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                c.execute("ROLLBACK TO SAVEPOINT partition")  # made by another process just now
            c.execute("RELEASE SAVEPOINT partition")
            self._new_partitions.add((start, end))

    def reading_partitions(self) -> list[tuple[str, int, int]]:
        """(name, from, to) of every readings partition, oldest first (from, to: meter time, UTC s)."""
        rows = self._rows("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "WHERE i.inhparent = 'readings'::regclass")
        out = []
        for (name,) in rows:
            if not name.startswith("readings_y"):
                continue  # readings_beyond: no month
            y, m = int(name[10:14]), int(name[15:17])
            start = int(datetime(y, m, 1, tzinfo=_UTC).timestamp())
            out.append((name, *month_of(start)))
        return sorted(out, key=lambda p: p[1])

    def drop_readings_before(self, t: int) -> list[str]:
        """Retention: drop the partitions of readings whose month ended at or before meter time t (the frames,
        the signed evidence, are kept); committed at once. Returns the partitions dropped."""
        self.commit()
        gone = [p for p in self.reading_partitions() if p[2] <= t]
        for name, start, end in gone:
            self._execute(f"DROP TABLE {name}")
            self._partitions.discard((start, end))
        self.commit()
        return [p[0] for p in gone]
