"""Fixtures of the host tests: a store on each backend.

    store_db    parametrized: a SQLite file path, then a fresh PostgreSQL database's URL (meterkit.testing.pgplugin's
                pg_url: skipped without PostgreSQL, failed under METERKIT_SERVERS=require)
    store       open_store(store_db), closed afterwards
"""

from __future__ import annotations

import pytest

from meterkit.store import open_store

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def store_db(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return tmp_path / "head.db"


@pytest.fixture
def store(store_db):
    s = open_store(store_db)
    yield s
    s.close()
