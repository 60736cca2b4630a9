"""Parts of the concentrator on their own: the transactional counters, the acknowledgement watermark, the
settings, duplicate detection by message. A real store where one is needed (each test on SQLite and on
PostgreSQL: tests/host/conftest.py); the whole concentrator is tested end to end in test_concentrator*.py."""

from __future__ import annotations

import pytest

from meter import cose
from meter import messages as M
from meterkit.headend.acks import Watermark, ranges_add, ranges_covered
from meterkit.headend.config import ConcentratorConfig
from meterkit.headend.counters import Counters
from meterkit.headend.ingest import same_message
from meterkit.store import open_store
from meterkit.store.api import Store
from meterkit.testing.rig import SimMeter

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class FailingCommit:
    """A store whose next commit raises (a full disk), once."""

    def __init__(self, store: Store):
        self.store = store
        self.fail = False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def commit(self) -> None:
        if self.fail:
            self.fail = False
            raise OSError("disk full")
        self.store.commit()


@pytest.fixture
def store(store_db):
    s = open_store(store_db, synchronous="OFF")
    yield FailingCommit(s)
    s.close()


def test_outcomes_count_only_when_their_transaction_commits(store):
    c = Counters(store, lambda: 100.0)
    with c.transaction():
        c.stage("outages")
        assert c.get("outages") == 0  # not before the commit
    assert c.get("outages") == 1 and store.counters() == {"outages": 1}
    store.fail = True
    with pytest.raises(OSError), c.transaction():
        c.stage("outages")
        c.stage("gaps_filled", 2)
    assert c.get("outages") == 1 and c.get("gaps_filled") == 0
    assert store.counters() == {"outages": 1}
    with pytest.raises(RuntimeError), c.transaction():
        c.stage("outages")
        raise RuntimeError("the work itself failed")
    assert c.snapshot() == {"outages": 1, "rejects": {}}


def test_events_count_at_once_and_survive_a_failed_commit(store):
    c = Counters(store, lambda: 100.0)
    c.count("noise_bytes", 7)
    c.reject(b"\x01" * 8, "1.2.3.4", "bad-signature", "signature does not verify")
    assert c.get("noise_bytes") == 7 and c.snapshot()["rejects"] == {"bad-signature": 1}
    store.fail = True
    with pytest.raises(OSError), c.transaction():
        pass
    assert store.counters() == {} and store.rejects() == []
    with c.transaction():
        pass
    assert store.counters() == {"noise_bytes": 7, "rejected": 1}
    assert [(r.reason, r.count, r.last_detail) for r in store.rejects()] == [
        ("bad-signature", 1, "signature does not verify")]
    again = Counters(store, lambda: 200.0)  # a restart: the saved counts are where it starts
    assert again.snapshot() == {"noise_bytes": 7, "rejected": 1, "rejects": {"bad-signature": 1}}


def test_staging_needs_one_transaction(store):
    c = Counters(store, lambda: 100.0)
    with pytest.raises(RuntimeError, match="outside a transaction"):
        c.stage("outages")
    with pytest.raises(RuntimeError, match="do not nest"), c.transaction(), c.transaction():
        pass


def test_sequence_ranges_merge_and_cover():
    r: list[list[int]] = []
    for lo, hi in [(5, 5), (7, 9), (1, 2), (3, 3), (20, 30), (6, 6), (11, 19)]:
        ranges_add(r, lo, hi)
    assert r == [[1, 3], [5, 9], [11, 30]]
    assert ranges_covered(r, 0, 40) == 3 + 5 + 20
    assert ranges_covered(r, 4, 4) == 0 and ranges_covered(r, 8, 12) == 4


def test_watermark_never_passes_an_unsettled_hole():
    w = Watermark()
    w.accept([1024, 1025, 1027])  # a boot numbers from a block's start (meter.seqno.BLOCK)
    assert (w.first_seq, w.ack, w.holes(), w.newest()) == (1024, 1025, [(1026, 1026)], 1027)
    assert w.missing(1024, 1027) == 1 and w.missing(1028, 1034) == 7
    w.accept([1029, 1030])
    assert w.holes() == [(1026, 1026), (1028, 1028)]
    w.cover(1026, 1026)  # a back-fill answer settles it
    w.advance()
    assert (w.ack, w.holes(), w.ranges) == (1027, [(1028, 1028)], [[1029, 1030]])
    w.accept([1028])
    w.advance()
    assert (w.ack, w.holes(), w.ranges, w.newest()) == (1030, [], [], 1030)
    w.cover(3, 9)  # below W: nothing to do
    assert w.ranges == []


def test_a_meters_first_frames_lost_on_the_way_are_a_gap():
    # the first frame the head-end stores is not where the meter's numbering began: what came before in that
    # block (a hello sent before the serial port was opened) is a gap to back-fill, not acknowledged unseen
    w = Watermark()
    w.accept([2050, 2051])
    assert (w.first_seq, w.ack, w.holes()) == (2050, 2047, [(2048, 2049)])
    w.cover(2048, 2049)  # the back-fill resent them (or the meter answered that they were never made)
    w.advance()
    assert w.ack == 2051


def test_settings_are_checked_where_they_are_given():
    cfg = ConcentratorConfig(backfill_after=12)
    assert cfg.retry_after == 12 and ConcentratorConfig(command_retry_after=0).retry_after == 0
    for bad in ({"batch_frames": 0}, {"offline_after": 0}, {"idle_timeout": -1}, {"backfill_after": -1},
                {"max_rate": 0}, {"command_retry_after": -5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ConcentratorConfig(**bad)
    for bad in ({"per_link": 2.5}, {"command_attempts": True}, {"tick_s": "1"}):
        with pytest.raises(TypeError, match=next(iter(bad))):
            ConcentratorConfig(**bad)
    assert ConcentratorConfig(max_rate=None).max_rate is None
    with pytest.raises(TypeError):
        ConcentratorConfig(no_such_setting=1)


def test_a_resent_frame_with_the_other_valid_signature_is_the_same_message():
    m = SimMeter()
    raw = m.cose(M.READING, 0, {M.K_REGISTERS: {M.OBIS_IMPORT: 1, M.OBIS_EXPORT: 0}, M.K_INSTANT: [0, 0, 0],
                                M.K_UNCOVERED_PPM: 0}, seq=7)
    kid, _, payload, sig = cose.split(raw)
    s = int.from_bytes(sig[32:], "big")
    malleated = cose.envelope(kid, payload, sig[:32] + (P256_N - s).to_bytes(32, "big"))
    assert malleated != raw and same_message(raw, malleated)
    other = m.cose(M.READING, 0, {M.K_REGISTERS: {M.OBIS_IMPORT: 2, M.OBIS_EXPORT: 0}, M.K_INSTANT: [0, 0, 0],
                                  M.K_UNCOVERED_PPM: 0}, seq=7)
    assert not same_message(raw, other)
