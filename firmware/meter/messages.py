# Meter messages (docs/protocol.md): payload maps for every kind, signed into COSE_Sign1 and framed.
# Pure: runs on the meter and, as an oracle, under CPython.
#
# The meter builds: hello, reading, interval rows, event, billing snapshot, command response.
# It verifies: commands and cumulative acknowledgements from the head-end (signed, for this device, with a
# counter above the last one accepted, not expired). Nothing unauthenticated changes meter state.
from meter import cbor, cose, frame

HELLO = 1
READING = 2
INTERVALS = 3
EVENT = 4
BILLING = 5
RESPONSE = 6
COMMAND = 16
ACK = 17

K_KIND = 1
K_DEV = 2
K_SEQ = 3
K_TIME = 4
K_STATUS = 5
K_EXPIRES = 9
K_OP = 10
K_ARGS = 11
K_ACK_SEQ = 12

# Command operations (key 10 of a command). Op 1 (back-fill of frames) is handled by meter.link itself.
OP_BACKFILL = 1
OP_CALENDAR = 2  # args {1: calendar (meter.tou dict), 2: activation UTC}: arm the passive calendar
OP_BILLING_RESET = 3  # args {}: end the billing period now (snapshot, demand reset)
OP_PROFILE = 4  # args {1: from UTC, 2: to UTC}: send the stored load-profile rows ending in [from, to] again
COMMAND_MAX_PAYLOAD = 3072  # bytes of CBOR a head-end message may carry (a calendar)
COMMAND_MAX_ITEMS = 512  # ... CBOR data items (keys, values, containers) in it

# Status bits (key 5)
ST_SENSOR_FAULT = 1 << 0
ST_CLOCK_NOT_SET = 1 << 1
ST_RELAY_OPEN = 1 << 2
ST_POWER_FAIL = 1 << 3
ST_CHIP_RESET = 1 << 4
ST_I2C_ERRORS = 1 << 5
ST_OVERFLOW = 1 << 6
ST_MISSED = 1 << 7
ST_RESTORED = 1 << 8

# Interval-row status bits
ROW_POWER_FAIL = 1 << 0
ROW_CLOCK_ADJUSTED = 1 << 1
ROW_DST = 1 << 2
ROW_RELAY_OPEN = 1 << 3
ROW_PARTIAL = 1 << 4


def obis_key(code):
    """'1.8.0' -> 10800 (C*10000 + D*100 + E); ValueError for anything else."""
    parts = code.split(".")
    if len(parts) != 3:
        raise ValueError("OBIS code must be C.D.E, got %r" % code)
    c, d, e = int(parts[0]), int(parts[1]), int(parts[2])
    if not (0 <= c <= 255 and 0 <= d <= 99 and 0 <= e <= 99):
        raise ValueError("OBIS code out of range: %r" % code)
    return c * 10000 + d * 100 + e


def obis_code(key):
    return "%d.%d.%d" % (key // 10000, key // 100 % 100, key % 100)


def register_map(snapshot, tariffs=None):
    """Registers.snapshot() -> {obis_key: Wh} (the residuals stay on the meter). Tariff registers are sent for
    tariffs 1..`tariffs` (the tariffs the meter's calendar uses) and for any other that holds energy; with a
    single tariff in use, 1.8.1 / 2.8.1 equal the totals and are left out: 8 bytes less on every reading."""
    out = {}
    for code, value in snapshot.items():
        if isinstance(value, int) and code.count(".") == 2:
            k = obis_key(code)
            e = k % 100
            if e == 0 or value or (tariffs is not None and e <= tariffs):
                out[k] = value
    if not any(k % 100 >= 2 for k in out):
        for k in [k for k in out if k % 100 == 1]:
            del out[k]
    return out


class Builder:
    """Builds signed, framed meter messages. identity signs; seq hands out frame sequence numbers."""

    def __init__(self, identity, seq, time):
        self.identity = identity
        self.seq = seq
        self.time = time

    def payload(self, kind, status, body):
        m = {K_KIND: kind, K_DEV: self.identity.device_id, K_SEQ: self.seq.take(), K_TIME: self.time(),
             K_STATUS: status}
        for k in body:
            m[k] = body[k]
        return m

    def cose(self, kind, status, body):
        """The signed COSE_Sign1 bytes of one message."""
        return self.identity.sign(cbor.encode(self.payload(kind, status, body)))

    def frame(self, kind, status, body):
        """The COBS frame (what goes on the wire) of one message."""
        return frame.encode_frame(self.cose(kind, status, body))


def hello_body(fw_version, board, boots, cycle_us, shunt_duty_ppm, shunt_uohm, quantum_wh):
    return {6: fw_version, 7: board, 8: boots, 9: cycle_us, 10: shunt_duty_ppm, 11: shunt_uohm, 12: quantum_wh}


def reading_body(snapshot, power_mw, bus_mv, current_ma, uncovered_ppm, tariffs=None, tariff=None, demand=None):
    """tariff: the tariff in force (key 9, sent when the calendar has more than one); demand: [current average
    W, last period average W] (key 10, 1.4.0 and 1.5.0)."""
    b = {6: register_map(snapshot, tariffs), 7: [power_mw, bus_mv, current_ma], 8: uncovered_ppm}
    if tariff is not None:
        b[9] = tariff
    if demand is not None:
        b[10] = demand
    return b


def intervals_body(rows, period_s):
    """rows: [[end_utc, import_mwh, export_mwh, status], ...] oldest first."""
    return {6: rows, 7: period_s}


def billing_body(period_end, snapshot, max_demand, tariffs=None):
    """A billing snapshot: period end (UTC), every register, and the maximum demands of the period as
    Demand.snapshot() gives them ({"1.6.t": [W, period end]}); all tariff registers in use are included."""
    md = {}
    for code in max_demand:
        k = obis_key(code)
        if tariffs is None or k % 100 <= tariffs:
            md[k] = max_demand[code]
    return {6: period_end, 7: register_map(snapshot, tariffs), 8: md}


def event_body(event_seq, code, value, t):
    return {6: event_seq, 7: code, 8: value, 9: t}


def response_body(counter, result, reason=None):
    b = {6: counter, 7: result}
    if reason:
        b[8] = reason
    return b


# -- head-end -> meter -------------------------------------------------------------------------------------
class HostMessageError(ValueError):
    """A command or acknowledgement the meter refuses; .reason is a short code for counting."""

    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason


def verify_host(cose_bytes, identity, now, last_counter):
    """Verify a command or acknowledgement; return (kind, counter, payload map). Raises HostMessageError."""
    if identity.headend_pub is None:
        raise HostMessageError("no-headend-key", "no head-end key installed: nothing from the head-end is accepted")
    try:
        _kid, payload = cose.verify1(cose_bytes, identity.headend_lookup)
    except cose.UnknownKid:
        raise HostMessageError("unknown-kid", "signed by a key that is not this meter's head-end")
    except cose.BadSignature:
        raise HostMessageError("bad-signature", "head-end signature does not verify")
    except cose.COSEError as e:
        raise HostMessageError("malformed", "not a valid COSE_Sign1: %s" % e)
    try:
        m = cbor.decode(payload, max_len=COMMAND_MAX_PAYLOAD, max_depth=8, max_items=COMMAND_MAX_ITEMS)
    except cbor.CBORError as e:
        raise HostMessageError("malformed", "payload is not deterministic CBOR: %s" % e)
    if not isinstance(m, dict):
        raise HostMessageError("wrong-type", "payload is not a map")
    for k in (K_KIND, K_SEQ, K_TIME, K_EXPIRES):
        if not isinstance(m.get(k), int) or isinstance(m.get(k), bool) or m.get(k) < 0:
            raise HostMessageError("wrong-type", "key %d must be an unsigned integer" % k)
    kind = m[K_KIND]
    if kind not in (COMMAND, ACK):
        raise HostMessageError("wrong-kind", "kind %d is not a command or an acknowledgement" % kind)
    if m.get(K_DEV) != identity.device_id:
        raise HostMessageError("wrong-device", "addressed to another meter")
    counter = m[K_SEQ]
    if counter <= last_counter:
        raise HostMessageError("replay", "counter %d is not above the last accepted %d" % (counter, last_counter))
    if now > m[K_EXPIRES]:
        raise HostMessageError("expired", "expired at %d, now %d" % (m[K_EXPIRES], now))
    if kind == ACK and not isinstance(m.get(K_ACK_SEQ), int):
        raise HostMessageError("wrong-type", "acknowledgement without a sequence number (key 12)")
    if kind == COMMAND and not isinstance(m.get(K_OP), int):
        raise HostMessageError("wrong-type", "command without an operation (key 10)")
    return kind, counter, m
