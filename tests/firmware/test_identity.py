# The meter's identity, frame sequence numbers and its checks on head-end messages, inside MicroPython.
import os

from meter import cbor, cose, messages, p256
from meter.identity import Identity, IdentityError, key_id
from meter.seqno import FrameSeq
from meter.store import Store
from mptest import eq, fresh_dir, raises


def _dir():
    return fresh_dir("test-identity")


def test_key_is_made_once_and_kept():
    d = _dir()
    a = Identity(d)
    eq(a.created, True, "created on first boot")
    b = Identity(d)
    eq(b.created, False, "loaded on the next")
    eq(b.public_key, a.public_key, "same key after a restart")
    eq(b.device_id, key_id(a.public_key), "device id derives from the public key")
    eq(len(b.device_id), 8, "8-byte device id")
    frame = b.sign(b"payload")
    eq(cose.verify1(frame, lambda kid: a.public_key if kid == a.device_id else None)[1], b"payload", "verifies")


def test_private_key_is_not_in_anything_the_meter_exports():
    d = _dir()
    a = Identity(d)
    for name in os.listdir(d):
        if name.startswith("device-key"):
            continue
        with open(d + "/" + name, "rb") as f:
            assert a._d not in f.read(), name
    assert a._d not in a.public_key


def test_headend_key_install_checks_the_point():
    d = _dir()
    a = Identity(d)
    raises(IdentityError, a.install_headend, b"\x04" + bytes(64))  # (0, 0) is not on the curve
    raises(IdentityError, a.install_headend, b"short")
    eq(a.headend_pub, None, "nothing installed by a refused key")
    _, he_pub = p256.generate_key()
    a.install_headend(he_pub)
    eq(Identity(d).headend_pub, he_pub, "persisted")


def test_sequence_numbers_never_repeat_across_restarts():
    d = _dir()
    seen = []
    for boot in range(4):
        st = Store(d, "frame-seq", max_payload=16)
        seq = FrameSeq(st, block=16)
        for _ in range(5 + 7 * boot):
            seen.append(seq.take())
    eq(len(seen), len(set(seen)), "unique")
    eq(seen, sorted(seen), "increasing")
    eq(st.writes, 2, "one flash write per block of 16 in the last boot (26 numbers)")


def _headend(d):
    ident = Identity(d)
    he_d, he_pub = p256.generate_key()
    ident.install_headend(he_pub)
    return ident, he_d, key_id(he_pub)


def _host_msg(he_d, he_kid, payload):
    return cose.sign1(he_d, he_kid, cbor.encode(payload))


# arguments that are exactly the schema of each operation (meter.cmdschema); the others take none or are
# refused before their arguments are looked at
_ARGS = {messages.OP_BACKFILL: {1: 0, 2: 0}, messages.OP_SET_TIME: {1: 1800000000}}


def _cmd(dev, counter, expires=2000, op=1):
    m = {1: messages.COMMAND, 2: dev, 3: counter, 4: 1000, 9: expires, 10: op}
    if op in _ARGS:
        m[11] = _ARGS[op]
    return m


def test_head_end_messages_are_checked():
    ident, he_d, he_kid = _headend(_dir())
    dev = ident.device_id
    ok = _host_msg(he_d, he_kid, _cmd(dev, 5))
    eq(messages.verify_host(ok, ident, 1500, 4)[:2], (messages.COMMAND, 5), "valid command")
    ack = _host_msg(he_d, he_kid, {1: messages.ACK, 2: dev, 3: 6, 4: 1000, 9: 2000, 12: 77})
    eq(messages.verify_host(ack, ident, 1500, 5)[2][12], 77, "valid ack")

    def reason(frame, now=1500, last=4):
        return raises(messages.HostMessageError, messages.verify_host, frame, ident, now, last).reason

    eq(reason(ok, last=5), "replay", "counter not above the last")
    eq(reason(ok, now=2001), "expired", "expired")
    eq(reason(_host_msg(he_d, he_kid, _cmd(b"\x01" * 8, 9))), "wrong-device", "another meter's")
    other_d, other_pub = p256.generate_key()
    eq(reason(_host_msg(other_d, key_id(other_pub), _cmd(dev, 9))), "unknown-kid", "someone else's key")
    eq(reason(_host_msg(other_d, he_kid, _cmd(dev, 9))), "bad-signature", "forged under the head-end kid")
    flipped = bytearray(ok)
    flipped[-1] ^= 1
    eq(reason(bytes(flipped)), "bad-signature", "bit flip")
    eq(reason(ok[:-10]), "malformed", "truncated")
    eq(reason(b"\x00garbage"), "malformed", "garbage")
    eq(reason(_host_msg(he_d, he_kid, {1: messages.READING, 2: dev, 3: 9, 4: 1, 9: 2000})), "wrong-kind", "kind")
    eq(reason(_host_msg(he_d, he_kid, {1: messages.COMMAND, 2: dev, 3: 9, 4: 1, 9: 2000})), "schema",
       "command without an operation: authentic, so refused with an answer (messages.CommandRefused)")


def test_a_meter_without_a_clock_takes_set_time_and_acks_but_no_other_command():
    # now=None: the meter's clock is not set, so it cannot judge expiry (docs/security.md)
    ident, he_d, he_kid = _headend(_dir())
    dev = ident.device_id
    stale = _host_msg(he_d, he_kid, _cmd(dev, 5, expires=2000, op=messages.OP_SET_TIME))
    eq(messages.verify_host(stale, ident, None, 4)[:2], (messages.COMMAND, 5), "set-time: expiry not judged")
    e = raises(messages.HostMessageError, messages.verify_host, stale, ident, None, 5)
    eq(e.reason, "replay", "the counter still must be fresh")
    ack = _host_msg(he_d, he_kid, {1: messages.ACK, 2: dev, 3: 6, 4: 1000, 9: 2000, 12: 77})
    eq(messages.verify_host(ack, ident, None, 5)[2][12], 77, "an ack can only repeat what was true: taken")
    for op in (messages.OP_BACKFILL, messages.OP_CALENDAR, messages.OP_BILLING_RESET, messages.OP_PROFILE, 99):
        cmd = _host_msg(he_d, he_kid, _cmd(dev, 7, op=op))
        e = raises(messages.HostMessageError, messages.verify_host, cmd, ident, None, 6)
        eq(e.reason, "clock-not-set", "op %d waits for the clock" % op)
    e = raises(messages.HostMessageError, messages.verify_host, stale, ident, 2001, 4)
    eq(e.reason, "expired", "with a clock, a set-time command expires like any other")


def test_nothing_is_accepted_without_a_head_end_key():
    ident = Identity(_dir())
    he_d, he_pub = p256.generate_key()
    frame = _host_msg(he_d, key_id(he_pub), _cmd(ident.device_id, 1))
    e = raises(messages.HostMessageError, messages.verify_host, frame, ident, 1500, 0)
    eq(e.reason, "no-headend-key", "reason")


def test_obis_keys():
    eq(messages.obis_key("1.8.0"), 10800, "1.8.0")
    eq(messages.obis_key("32.7.0"), 320700, "32.7.0")
    eq(messages.obis_code(20801), "2.8.1", "back")
    raises(ValueError, messages.obis_key, "1.8")
    eq(messages.register_map({"1.8.0": 5, "1.8.1": 5, "2.8.0": 0, "2.8.1": 0, "residual_uwh": {}}),
       {10800: 5, 20800: 0}, "single tariff: tariff registers left out")
    two = {"1.8.0": 5, "1.8.1": 3, "1.8.2": 2, "2.8.0": 0, "2.8.1": 0, "2.8.2": 0, "1.8.3": 0, "2.8.3": 0}
    eq(len(messages.register_map(two, 2)), 6, "two tariffs in use: all their registers sent, 1.8.3/2.8.3 not")
    eq(sorted(messages.register_map(two)), [10800, 10801, 10802, 20800],
       "tariffs in use unknown: the empty tariff registers left out")


def test_the_key_is_made_only_through_the_random_source_given():
    calls = []

    def source(n):
        calls.append(n)
        return bytes(range(1, n + 1))

    d = _dir()
    a = Identity(d, urandom=source)
    eq(calls, [32], "one 32-byte draw from the source")
    eq(a.public_key, p256.public_key(bytes(range(1, 33))), "the private key is those bytes")

    def refuse(n):
        raise AssertionError("a stored key needs no randomness")

    eq(Identity(d, urandom=refuse).public_key, a.public_key, "loaded, not made")
    e = raises(ValueError, Identity, _dir(), urandom=lambda n: b"short")
    assert "5 bytes" in str(e), str(e)


def test_an_orderly_restart_numbers_on_without_a_gap():
    d = _dir()
    st = Store(d, "frame-seq", max_payload=16)
    seq = FrameSeq(st, block=16)
    got = [seq.take() for _ in range(5)]
    seq.close()  # an orderly restart (meter.app.Meter.restart)
    again = FrameSeq(Store(d, "frame-seq", max_payload=16), block=16)
    got += [again.take() for _ in range(3)]
    eq(got, list(range(8)), "no gap after an orderly restart")
    again.take()
    lost = FrameSeq(Store(d, "frame-seq", max_payload=16), block=16)  # a power cut now: the rest of the block
    eq(lost.take(), 5 + 16, "an unplanned restart skips to the end of the reservation, never reusing a number")
