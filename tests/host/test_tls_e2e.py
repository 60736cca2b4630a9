"""TLS on the TCP link, end to end: the real firmware (Unix port, mbedTLS) as the client, the real concentrator as
an asyncio TLS server (docs/security.md, "What TLS adds").

- a fleet over TLS (and over mutual TLS): every frame stored and acknowledged, nothing of a frame on the wire in
  clear (a recording relay between meter and concentrator sees no device id);
- a meter that pins another CA refuses the head-end: nothing stored, nothing of its frames on the wire, and
  the concentrator counts the refused handshake;
- mutual TLS: a meter without a client certificate is refused by the concentrator.
"""

import asyncio

from cryptography.hazmat.primitives.asymmetric import ec

from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.store import open_store
from meterkit.wire.tlscerts import make_tls_dir


def _recording(fleet):
    """Every byte the meters send through their proxies, per meter name."""
    seen = {m.spec.name: bytearray() for m in fleet.meters}
    for m in fleet.meters:
        def fault(chunk, upstream, buf=seen[m.spec.name]):
            if upstream:
                buf.extend(chunk)
        m.proxy.fault = fault
    return seen


def _run(tmp_path, specs, *, hours=0.75, before=None, **kw):
    async def scenario():
        fleet = Fleet(tmp_path, specs, ec.generate_private_key(ec.SECP256R1()), tmp_path / "db.sqlite",
                      hours=hours, speed=1440.0, **kw)
        await fleet.setup()
        seen = _recording(fleet)
        if before is not None:
            before(fleet)
        try:
            await fleet.run(settle_s=1.5)
        finally:
            await fleet.close()
        return fleet, seen

    return asyncio.run(asyncio.wait_for(scenario(), 120))


def _stored(tmp_path, fleet):
    with open_store(tmp_path / "db.sqlite", create=False, readonly=True) as db:
        return {m.spec.name: len(db.frames_after(m.device, -1, limit=None)) for m in fleet.meters}


def test_a_fleet_over_tls_stores_every_frame_and_nothing_goes_in_clear(tmp_path):
    fleet, seen = _run(tmp_path, [MeterSpec("tls-a", "constant", "tcp", seed=1),
                                  MeterSpec("tls-b", "export", "tcp", seed=2)], tls=True)
    assert not [line for line in fleet.log if "exited with" in line], fleet.log
    stored = _stored(tmp_path, fleet)
    for m in fleet.meters:
        run = m.runs[-1]
        assert run["frames"] > 20 and stored[m.spec.name] >= run["frames"], (m.spec.name, run["frames"], stored)
        assert run["link"]["acked"] == run["link"]["last_seq"], run["link"]  # every frame acknowledged
        assert run["tls"]["handshakes"] >= 1 and run["tls"]["failures"] == 0, run["tls"]
        wire = bytes(seen[m.spec.name])
        assert wire[:1] == b"\x16", "the first byte a meter sends is a TLS handshake record"
        assert m.device not in wire, f"{m.spec.name}: its device id went over the wire in clear"
    assert fleet.conc.counters.snapshot().get("tls_sessions", 0) >= 2


def test_a_meter_pinning_another_ca_refuses_the_head_end(tmp_path):
    other = make_tls_dir(tmp_path / "other-ca")

    def pin_other(fleet):
        # this meter was provisioned with someone else's CA: the head-end's certificate does not verify
        install = fleet._install_tls

        def wrong(m):
            opts = install(m)
            if m.spec.name == "wrong-pin":
                (m.flash / "tls" / "ca.der").write_bytes(other.ca_der.read_bytes())
            return opts

        fleet._install_tls = wrong

    fleet, seen = _run(tmp_path, [MeterSpec("right-pin", "constant", "tcp", seed=1),
                                  MeterSpec("wrong-pin", "constant", "tcp", seed=2)], hours=0.5, tls=True,
                       before=pin_other, drain_ms=1000)
    stored = _stored(tmp_path, fleet)
    assert stored["right-pin"] > 10
    assert stored["wrong-pin"] == 0, "a meter that cannot verify the head-end sent frames"
    wrong = next(m for m in fleet.meters if m.spec.name == "wrong-pin")
    tls = wrong.runs[-1]["tls"]
    assert tls["handshakes"] == 0 and tls["failures"] >= 1 and "CA" in tls["last_error"], tls
    assert seen["wrong-pin"] and _handshake_only(seen["wrong-pin"], wrong.device)
    # the handshake the meter aborted (its alert: bad certificate), counted by the concentrator
    assert fleet.conc.counters.snapshot()["rejects"].get("tls-handshake", 0) >= 1


def _handshake_only(wire, device):
    """Only TLS handshake records (type 22) and alerts (21) went out: no application data, no device id."""
    pos = 0
    while pos + 5 <= len(wire):
        kind, length = wire[pos], int.from_bytes(wire[pos + 3:pos + 5], "big")
        if kind not in (21, 22):
            return False
        pos += 5 + length
    return device not in wire


def test_mutual_tls_refuses_a_meter_without_a_client_certificate(tmp_path):
    def strip_cert(fleet):
        install = fleet._install_tls

        def no_cert(m):
            opts = install(m)
            return opts[:4] if m.spec.name == "no-cert" else opts

        fleet._install_tls = no_cert

    fleet, _ = _run(tmp_path, [MeterSpec("with-cert", "constant", "tcp", seed=1),
                               MeterSpec("no-cert", "constant", "tcp", seed=2)], hours=0.5, mtls=True,
                    before=strip_cert, drain_ms=1000)
    stored = _stored(tmp_path, fleet)
    assert stored["with-cert"] > 10
    assert stored["no-cert"] == 0
    assert fleet.conc.counters.snapshot()["rejects"].get("tls-handshake", 0) >= 1
