"""What a table group needs of its database's connection, and the few helpers every group shares on top of it.

The groups are written once, in SQL both databases read: `?` placeholders (the PostgreSQL connection turns them
into psycopg's %s), ON CONFLICT ... DO NOTHING / DO UPDATE (SQLite >= 3.24), RETURNING (SQLite >= 3.35; Debian
bookworm has 3.40), NULLS FIRST (SQLite >= 3.30), the column "end" quoted. Where the two really differ, the
connection (meterkit.store.sqlite.base, meterkit.store.postgres.base) answers a hook:

    in_list(column, items)  the condition `column IN items`: SQLite a placeholder an item, PostgreSQL = ANY(array)
    _insert_new(sql)        an INSERT that skips a row already stored: SQLite INSERT OR IGNORE, PostgreSQL
                            ON CONFLICT DO NOTHING
    _row_locks(clause)      FOR UPDATE [SKIP LOCKED] on PostgreSQL; nothing on SQLite, whose BEGIN IMMEDIATE
                            (_begin(immediate=True)) holds the whole database
    _json_value(v)          a value for a JSON column (PostgreSQL jsonb; SQLite keeps it as it is)
    _query(sql, args)       (column names, rows) of a query handed out row by row (the export)

The bulk writes of the ingest's path have faster PostgreSQL versions of their own (meterkit.store.postgres.bulk).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from meterkit.store.rows import checked_fields, where


class Tables:
    """The connection's side (each method here is implemented by both connections) and the shared helpers."""

    # -- what the connection implements
    def _begin(self, immediate: bool = False) -> Any:
        """The open write transaction, begun if none is; immediate: take the write lock now (SQLite)."""
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """One statement in the open write transaction (begun if none is); its cursor."""
        raise NotImplementedError

    def _insert_many(self, sql: str, rows: Sequence[tuple]) -> int:
        """The statement once per row, in the open write transaction (none begun for no rows); how many rows it
        changed (an INSERT skipping rows already stored: the new ones)."""
        raise NotImplementedError

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """A query's rows (by position and by column name), in the open transaction if there is one."""
        raise NotImplementedError

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """A query's first row, or None."""
        raise NotImplementedError

    def _query(self, sql: str, args: Iterable[Any] = ()) -> tuple[list[str], Iterable[Sequence[Any]]]:
        raise NotImplementedError

    @staticmethod
    def in_list(column: str, items: list) -> tuple[str, list]:
        raise NotImplementedError

    def _insert_new(self, sql: str) -> str:
        raise NotImplementedError

    def _row_locks(self, clause: str) -> str:
        raise NotImplementedError

    def _json_value(self, value: Any) -> Any:
        raise NotImplementedError

    # -- shared
    def _where(self, *conditions: tuple[str, Any]) -> tuple[str, list]:
        """meterkit.store.rows.where with this database's IN."""
        return where(*conditions, in_list=self.in_list)

    def _returned(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """The first row a writing statement RETURNING gives, or None (all its rows are read, so that SQLite
        finishes the statement)."""
        rows = self._execute(sql, args).fetchall()
        return rows[0] if rows else None

    def _set(self, table: str, key: str, key_value: Any, fields: dict[str, Any], allowed: frozenset[str],
             what: str) -> None:
        """UPDATE table SET fields WHERE key = key_value (fields checked against `allowed`; flags as 0/1)."""
        if checked_fields(fields, allowed, what):
            sets = ", ".join(f"{k} = ?" for k in fields)
            values = [int(v) if type(v) is bool else v for v in fields.values()]
            self._execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", (*values, key_value))

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
