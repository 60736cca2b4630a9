"""`meterkit bench --only scale` runs end to end with tiny sizes: real `meterkit concentrator` processes on SQLite
and on PostgreSQL, HAProxy in front of two, the load generator in its own process. Only the structure and the
delivery are checked (every frame stored once, every acknowledgement verified by the meters), never a speed."""

from __future__ import annotations

from meterkit.bench.scale import SETUPS, bench_scale, format_scale
from meterkit.testing.haproxy import HAProxyUnavailable, haproxy_bin
from meterkit.testing.pgplugin import server_missing


def test_scale_section_runs_end_to_end_and_every_frame_is_stored_and_acknowledged(pg_server):
    try:
        haproxy_bin()
    except HAProxyUnavailable as e:
        server_missing("HAProxy", str(e))
    setups = tuple(s for s in SETUPS if s.name in ("sqlite-1", "pg-2-lb"))
    f = bench_scale(meters=6, frames=12, window=4, rounds=1, setups=setups, cost_frames=40, cost_batch=16,
                    pg=pg_server)
    assert set(f["setups"]) == {"sqlite-1", "pg-2-lb"}
    for name, s in f["setups"].items():
        assert s["frames"] == s["acked"] == s["stored"] == 72, name
        assert s["acks_refused"] == 0 and s["acks"] > 0 and s["connections_lost"] == 0, name
        assert s["steady_frames_per_s"] > 0 and s["steady_frames"] > 0
        assert {"concentrators", "load generator", "machine"} <= set(s["cpu_s"])
    lb = f["setups"]["pg-2-lb"]
    assert {"PostgreSQL", "HAProxy", "concentrator c1", "concentrator c2"} <= set(lb["cpu_s"])
    assert lb["exit_codes"] == [0, 0] and sum(lb["stored_by_concentrator"]) == 72
    assert sum(lb["haproxy_connections"].values()) == 6
    assert "PostgreSQL" not in f["setups"]["sqlite-1"]["cpu_s"]
    assert f["ratios"]["two_vs_one_haproxy"] is None  # pg-1-lb was not run
    assert {"bare_verify_us", "verify_and_decode_us", "store_sqlite_us", "store_pg_us",
            "store_pg_server_cpu_us"} <= set(f["costs"])
    text = format_scale(f)
    assert "sqlite-1" in text and "pg-2-lb" in text and "72/72" in text
