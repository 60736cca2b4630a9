"""meterkit.testing.pgserver and its fixtures: a real PostgreSQL started on a temporary directory and a free port,
a fresh database per test, stopped and removed at the end."""

from __future__ import annotations

import os

import psycopg
import pytest

from meterkit.testing import pgserver


def test_a_fresh_database_per_test_is_empty_and_writable(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SHOW server_encoding").fetchone()[0] == "UTF8"
        assert conn.execute("SELECT current_user").fetchone()[0] == pgserver.SUPERUSER
        conn.execute("CREATE TABLE mine (x bytea)")
        conn.execute("INSERT INTO mine VALUES (%s)", (b"\x00\xff",))
        assert conn.execute("SELECT x FROM mine").fetchone()[0] == b"\x00\xff"


def test_the_next_test_gets_another_database(pg_url, pg_server):
    assert pg_url.startswith(f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{pg_server.port}/")
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'mine'").fetchone()[0]
    assert tables == 0


def test_server_runs_unprivileged_in_its_own_directory(pg_server):
    assert pg_server.root.is_dir() and (pg_server.socket_dir / f".s.PGSQL.{pg_server.port}").exists()
    owner = pg_server.data.stat().st_uid
    assert owner != 0 and (pg_server.user is None or owner == pg_server.user.pw_uid)
    with psycopg.connect(pg_server.url("postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_a_second_server_starts_stops_and_is_removed():
    with pgserver.PgServer(fast=False) as pg:
        root, port = pg.root, pg.port
        url = pg.create_database("extra_db")
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW fsync").fetchone()[0] == "on"
        pg.drop_database("extra_db")
        with pytest.raises(ValueError):
            pg.create_database("bad; name")
    assert not root.exists() and pg.port is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://{pgserver.SUPERUSER}@127.0.0.1:{port}/postgres", connect_timeout=3)


def test_no_postgresql_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config
    monkeypatch.setattr(pgserver.glob, "glob", lambda pattern: [])
    with pytest.raises(pgserver.PgUnavailable, match="make deps"):
        pgserver.find_bindir()
    with pytest.raises(pgserver.PgUnavailable, match="make deps"):
        pgserver.PgServer()


def test_the_newest_version_is_chosen(tmp_path, monkeypatch):
    for v in ("9.6", "15", "13"):
        d = tmp_path / v / "bin"
        d.mkdir(parents=True)
        for b in ("initdb", "pg_ctl", "postgres"):
            (d / b).write_text("#!/bin/sh\n")
            os.chmod(d / b, 0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgserver.glob, "glob", lambda pattern: [str(tmp_path / v / "bin") for v in ("9.6", "15", "13")])
    assert pgserver.find_bindir() == tmp_path / "15" / "bin"


def test_missing_postgresql_skips_or_fails_when_required(monkeypatch):
    from meterkit.testing.pgplugin import pg_missing

    monkeypatch.delenv("METERKIT_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="did not run: no server"):
        pg_missing("no server")
    monkeypatch.setenv("METERKIT_SERVERS", "require")
    with pytest.raises(pytest.fail.Exception, match="required here"):
        pg_missing("no server")
