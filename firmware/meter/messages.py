# THE wire schema (docs/protocol.md holds its CDDL): every message kind, payload key, command operation and
# argument, result code, status bit and the OBIS packing, each named once here. The head-end imports these
# names (meterkit.wire) and declares no number of its own. Also the meter's payload builders and its check of
# head-end messages. Pure: runs on the meter and, as an oracle, under CPython.
#
# The meter builds: hello, reading, interval rows, event, billing snapshot, command response.
# It verifies: commands and cumulative acknowledgements from the head-end (signed, for this device, with a
# counter above the last one accepted, not expired). Nothing unauthenticated changes meter state.
from meter import cbor, cose, frame
from meter.clock import FREE_SHIFT_S

# -- message kinds (key 1) ---------------------------------------------------------------------------------
HELLO = 1
READING = 2
INTERVALS = 3
EVENT = 4
BILLING = 5
RESPONSE = 6
COMMAND = 16
ACK = 17

# -- keys every payload has --------------------------------------------------------------------------------
K_KIND = 1
K_DEVICE = 2  # meter messages: the sender; head-end messages: the meter addressed
K_SEQ = 3  # meter messages: the frame sequence number (never repeats)
K_COUNTER = K_SEQ  # head-end messages: the command counter (strictly increasing per meter)
K_TIME = 4  # meter messages: UTC seconds (seconds since boot while ST_CLOCK_NOT_SET)
K_ISSUED = K_TIME  # head-end messages: when it was signed
K_STATUS = 5  # meter messages: ST_* bits

# hello (kind 1)
K_FIRMWARE = 6
K_BOARD = 7
K_BOOT_COUNT = 8
K_CYCLE_US = 9
K_SHUNT_DUTY_PPM = 10
K_SHUNT_UOHM = 11
K_CHECKPOINT_WH = 12
# reading (kind 2)
K_REGISTERS = 6  # {obis_key: Wh}
K_INSTANT = 7  # [power mW, bus mV, current mA]
K_UNCOVERED_PPM = 8
K_TARIFF = 9  # the tariff in force (only with more than one tariff)
K_DEMAND = 10  # [current average W (1.4.0), last period average W (1.5.0)]
# -- calibration (meterkit device calibrate; meter.calibration) --
K_CALIBRATION = 11  # reading: the id of the calibration in force (the UTC second it was made; 0: none)
K_CONTROL = 12  # reading: [IC70 state, control mode, import limit in force W (0: none)], when not [1, 0, 0]
# intervals (kind 3)
K_ROWS = 6  # [[end UTC, import mWh, export mWh, ROW_* bits], ...] oldest first
K_PERIOD = 7  # interval length, s
# event (kind 4)
K_EVENT_SEQ = 6
K_EVENT_CODE = 7  # meter.events
K_EVENT_VALUE = 8  # int or text
K_EVENT_TIME = 9
# billing snapshot (kind 5)
K_PERIOD_END = 6
K_BILLING_REGISTERS = 7  # {obis_key: Wh}
K_MAX_DEMAND = 8  # {obis_key of 1.6.t: [W, period end UTC]}
# command response (kind 6)
K_ANSWERED = 6  # the counter of the command answered
K_RESULT = 7  # RESULT_*
K_REASON = 8  # text, optional
# head-end messages (kinds 16, 17)
K_EXPIRES = 9  # UTC seconds: refused after it
K_OP = 10  # command: OP_*
K_ARGS = 11  # command: {uint: value}, per operation below
K_ACK_SEQ = 12  # acknowledgement: every frame with seq <= this one is stored

# -- command operations (key 10) and their arguments (key 11) ---------------------------------------------
OP_BACKFILL = 1  # send the frames still held in [first, last] again (meter.link handles it)
A_FIRST = 1
A_LAST = 2
OP_CALENDAR = 2  # arm a passive TOU calendar (meter.tou dict) for its activation instant
A_CALENDAR = 1
A_ACTIVATION = 2
OP_BILLING_RESET = 3  # end the billing period now (snapshot, demand reset); no arguments
OP_PROFILE = 4  # send the stored load-profile rows ending in [from, to] again
A_FROM = 1
A_TO = 2
# -- set-time (issue 10, "a board that keeps time"): the DLMS clock object's rule, docs/protocol.md ------------
OP_SET_TIME = 5  # set the meter's clock to UTC second A_UTC; a shift beyond SET_TIME_FREE_S needs A_FORCE true
A_UTC = 1
A_FORCE = 2
SET_TIME_FREE_S = FREE_SHIFT_S  # 900: a set clock moves by at most this without the force flag (meter.clock)
# -- end of set-time --
# -- two-way control (issue 12): DLMS IC70 disconnect control, IC71 limiter, demand response, configuration --
OP_DISCONNECT = 6  # IC70 remote_disconnect (transitions b, c); no arguments
OP_RECONNECT = 7  # IC70 remote_reconnect (a, or d: to ready_for_reconnection, by control mode); no arguments
OP_LIMITER = 8  # set IC71 limiter parameters; all optional, at least one; what is left out is kept
A_THRESHOLD_NORMAL = 1  # W of active import (0: no limit)
A_THRESHOLD_EMERGENCY = 2  # W, in force inside the emergency profile's window for a meter of its groups
A_MIN_OVER_S = 3  # s above the threshold before the limiter disconnects (transition g)
A_MIN_UNDER_S = 4  # s below it before the limiter restores (reconnects with A_AUTO_RECONNECT)
A_EMERGENCY_ID = 5
A_EMERGENCY_START = 6  # UTC
A_EMERGENCY_DURATION_S = 7
A_EMERGENCY_GROUPS = 8  # [group id, ...]
A_AUTO_RECONNECT = 9  # true: reconnect after min_under (else the customer's button does, from state 2)
OP_DR_EVENT = 9  # a demand-response event: from A_START for A_DURATION_S, import limited to A_LIMIT_W, or shed
A_DR_ID = 1
A_START = 2  # UTC
A_DURATION_S = 3
A_LIMIT_W = 4  # optional: the import limit in force during the event
A_SHED = 5  # optional bool: open the load-control output during the event (one of A_LIMIT_W, A_SHED true)
OP_CONFIG = 10  # set configuration; all optional, at least one; what is left out is kept
A_DEMAND_PERIOD_S = 1
A_CAPTURE_PERIOD_S = 2  # the load profile's capture period
A_READING_S = 3  # the reporting interval
A_OVER_CURRENT_MA = 4  # alarm thresholds (events 16, 17)
A_OVER_VOLTAGE_MV = 5
A_CONTROL_MODE = 6  # IC70 control_mode, 0..6
A_GROUPS = 7  # [group id, ...]: the groups this meter belongs to (emergency profiles, DR)
OP_REBOOT = 11  # answer, then restart; no arguments
OP_KEY_ROTATE = 12  # replace the head-end key; signed by the current one, only the new one verifies after it
A_KEY = 1  # the new key: 65-byte uncompressed P-256 point
# disconnect control states (IC70 attribute 3)
CONTROL_DISCONNECTED = 0
CONTROL_CONNECTED = 1
CONTROL_READY = 2  # ready_for_reconnection: the customer's button closes the relay
GROUPS_MAX = 16  # group ids per list, each 0..65535
# -- end of two-way control --
# -- firmware updates (issue 15; meter.fwupdate, docs/firmware-updates.md) -----------------------------------
OP_FW_MANIFEST = 13  # start (or resume) an update: the manifest, a COSE_Sign1 signed by the firmware key
A_MANIFEST = 1
OP_FW_CHUNK = 14  # payload bytes [A_OFFSET, A_OFFSET + len(A_DATA)) of the update the manifest started
A_OFFSET = 1
A_DATA = 2
OP_FW_ACTIVATE = 15  # verify the payload written (size, digest, manifest again), boot it once answered
FW_CHUNK_MAX = 1024  # payload bytes per chunk; a chunk never crosses a FW_BLOCK boundary
FW_BLOCK = 4096  # the flash erase block (an ESP32 partition's block size)
FW_MANIFEST_MAX = 512  # bytes of a signed manifest
# the manifest's payload: a CBOR map, RFC 9124's information model (its element names in brackets)
FWM_FORMAT = 1  # [manifest element version]: 1
FWM_SEQ = 2  # [monotonic sequence number]: taken only above every number the meter has activated
FWM_VENDOR = 3  # [vendor id]: text, FW_VENDOR
FWM_CLASS = 4  # [class id]: text "<board>/<arch>": the board profile's name and the .mpy native arch
FWM_DIGEST = 5  # [payload digest]: SHA-256 of the payload, 32 bytes
FWM_SIZE = 6  # [payload size]: bytes
FWM_PAYLOAD = 7  # [payload format]: FW_IMAGE or FW_APP_FILES (the one the board takes: hw.ota.format), or FW_KEY
FWM_VERSION = 8  # [version]: text the meter reports in its hello once it runs the image ("key <kid>": FW_KEY)
FW_VENDOR = "meterkit"
FW_IMAGE = 1  # a firmware image for the next OTA partition
FW_APP_FILES = 2  # an archive of application files for the other A/B slot (meter.appslots, meter.archive)
FW_KEY = 3  # the next firmware-signing public key (65 bytes, uncompressed P-256), signed by the current one
# -- end of firmware updates --
COMMAND_MAX_PAYLOAD = 3072  # bytes of CBOR a head-end message may carry (a calendar)
COMMAND_MAX_ITEMS = 512  # ... CBOR data items (keys, values, containers) in it

# command results (response key 7)
RESULT_OK = 0
RESULT_GONE = -1  # back-fill: part of the range is no longer held; profile: no rows
RESULT_UNKNOWN_OP = -2
RESULT_BAD_ARGS = -3
RESULT_REJECTED = -4  # well-formed but refused (e.g. an invalid calendar)
# -- command schema (issue 11, finding 3): a signed command that is not exactly the schema is refused ------------
RESULT_MALFORMED = -5  # its keys, or their types or ranges, are not exactly the command schema: nothing done
UINT32_MAX = 0xFFFFFFFF  # utc (keys 4 and 9, time arguments): uint32
UINT64_MAX = 0xFFFFFFFFFFFFFFFF  # counters, sequence numbers
# -- end of command schema --

# -- status bits (key 5) -----------------------------------------------------------------------------------
ST_SENSOR_FAULT = 1 << 0
ST_CLOCK_NOT_SET = 1 << 1
ST_RELAY_OPEN = 1 << 2
ST_POWER_FAIL = 1 << 3
ST_CHIP_RESET = 1 << 4
ST_I2C_ERRORS = 1 << 5
ST_OVERFLOW = 1 << 6
ST_MISSED = 1 << 7
ST_RESTORED = 1 << 8
ST_RECONNECT_READY = 1 << 9  # IC70 state 2 (ready_for_reconnection), beside ST_RELAY_OPEN
ST_LOAD_SHED = 1 << 10  # the load-control output is open (a demand-response shed)
ST_DR_ACTIVE = 1 << 11  # a demand-response event is in force

# Interval-row status bits
ROW_POWER_FAIL = 1 << 0
ROW_CLOCK_ADJUSTED = 1 << 1
ROW_DST = 1 << 2
ROW_RELAY_OPEN = 1 << 3
ROW_PARTIAL = 1 << 4

# -- OBIS: register key = C*10000 + D*100 + E (obis_key) ----------------------------------------------------
OBIS_IMPORT = 10800  # 1.8.0 (1.8.t: + t)
OBIS_EXPORT = 20800  # 2.8.0 (2.8.t: + t)
OBIS_MAX_DEMAND = 10600  # 1.6.0 (1.6.t: + t)
OBIS_POWER = 10700  # 1.7.0
OBIS_VOLTAGE = 320700  # 32.7.0
OBIS_CURRENT = 310700  # 31.7.0
OBIS_KEY_MAX = 2559999  # 255.99.99


def obis_key(code):
    """'1.8.0' -> 10800 (C*10000 + D*100 + E); the full electricity forms '1-0:1.8.0' and '1-0:1.8.0*255' too.
    C is 0..255, D and E 0..99 (what the packing holds); ValueError for anything else."""
    s = code.strip() if isinstance(code, str) else ""
    if s.startswith("1-0:"):
        s = s[4:]
    if s.endswith("*255"):
        s = s[:-4]
    parts = s.split(".")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError("not an OBIS code C.D.E: %r" % (code,))
    c, d, e = int(parts[0]), int(parts[1]), int(parts[2])
    if c > 255 or d > 99 or e > 99:
        raise ValueError("OBIS code %r outside the packable range (C <= 255, D and E <= 99)" % (code,))
    return c * 10000 + d * 100 + e


def obis_code(key):
    """The inverse of obis_key: 10800 -> '1.8.0'."""
    if type(key) is not int or not 0 <= key <= OBIS_KEY_MAX:
        raise ValueError("not an OBIS register key: %r" % (key,))
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
    """Builds signed, framed meter messages: identity signs, seq hands out the frame sequence numbers. Each
    message comes with its number beside it, (seq, bytes): nothing ever reads a number back out of a frame."""

    def __init__(self, identity, seq, time):
        self.identity = identity
        self.seq = seq
        self.time = time

    def payload(self, seq, kind, status, body):
        m = {K_KIND: kind, K_DEVICE: self.identity.device_id, K_SEQ: seq, K_TIME: self.time(), K_STATUS: status}
        for k in body:
            m[k] = body[k]
        return m

    def cose(self, kind, status, body):
        """(seq, the signed COSE_Sign1 bytes) of one message."""
        seq = self.seq.take()
        return seq, self.identity.sign(cbor.encode(self.payload(seq, kind, status, body)))

    def frame(self, kind, status, body):
        """(seq, the COBS frame: what goes on the wire) of one message."""
        seq, c = self.cose(kind, status, body)
        return seq, frame.encode_frame(c)


def hello_body(fw_version, board, boots, cycle_us, shunt_duty_ppm, shunt_uohm, quantum_wh):
    return {K_FIRMWARE: fw_version, K_BOARD: board, K_BOOT_COUNT: boots, K_CYCLE_US: cycle_us,
            K_SHUNT_DUTY_PPM: shunt_duty_ppm, K_SHUNT_UOHM: shunt_uohm, K_CHECKPOINT_WH: quantum_wh}


def reading_body(snapshot, power_mw, bus_mv, current_ma, uncovered_ppm, tariffs=None, tariff=None, demand=None,
                 calibration=None, control=None):
    """tariff: the tariff in force (key 9, sent when the calendar has more than one); demand: [current average
    W, last period average W] (key 10, 1.4.0 and 1.5.0); calibration: the calibration id (key 11); control:
    [IC70 state, control mode, import limit in force W] (key 12, left out as None when it is [1, 0, 0])."""
    b = {K_REGISTERS: register_map(snapshot, tariffs), K_INSTANT: [power_mw, bus_mv, current_ma],
         K_UNCOVERED_PPM: uncovered_ppm}
    if tariff is not None:
        b[K_TARIFF] = tariff
    if demand is not None:
        b[K_DEMAND] = demand
    if calibration is not None:
        b[K_CALIBRATION] = calibration
    if control is not None:
        b[K_CONTROL] = control
    return b


def intervals_body(rows, period_s):
    """rows: [[end_utc, import_mwh, export_mwh, status], ...] oldest first."""
    return {K_ROWS: rows, K_PERIOD: period_s}


def billing_body(period_end, snapshot, max_demand, tariffs=None):
    """A billing snapshot: period end (UTC), every register, and the maximum demands of the period as
    Demand.snapshot() gives them ({"1.6.t": [W, period end]}); all tariff registers in use are included."""
    md = {}
    for code in max_demand:
        k = obis_key(code)
        if tariffs is None or k % 100 <= tariffs:
            md[k] = max_demand[code]
    return {K_PERIOD_END: period_end, K_BILLING_REGISTERS: register_map(snapshot, tariffs), K_MAX_DEMAND: md}


def event_body(event_seq, code, value, t):
    return {K_EVENT_SEQ: event_seq, K_EVENT_CODE: code, K_EVENT_VALUE: value, K_EVENT_TIME: t}


def response_body(counter, result, reason=None):
    b = {K_ANSWERED: counter, K_RESULT: result}
    if reason:
        b[K_REASON] = reason
    return b


# -- head-end -> meter -------------------------------------------------------------------------------------
class HostMessageError(ValueError):
    """A command or acknowledgement the meter refuses; .reason is a short code for counting."""

    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason


class CommandRefused(HostMessageError):
    """A command that is authentic (signed, for this meter, counter fresh, not expired) but not exactly the
    command schema: refused with a signed response (.result RESULT_*, the message as reason) under .counter,
    and event 18 (meter.link); nothing else happens. Attributes set after construction (see meter.cose)."""


def _refused(counter, result, msg):
    e = CommandRefused("schema", msg)
    e.counter = counter
    e.result = result
    return e


def is_uint(v, hi):
    """v is an integer 0..hi (a bool is not an integer here)."""
    return type(v) is int and 0 <= v <= hi


_HOST_KEYS = (K_KIND, K_DEVICE, K_SEQ, K_TIME, K_EXPIRES)


def verify_host(cose_bytes, identity, now, last_counter):
    """Verify a command or acknowledgement; return (kind, counter, payload map). Raises HostMessageError, or
    CommandRefused for an authentic command that is not exactly the schema (docs/protocol.md, the CDDL: exactly
    its keys, utc times with issued <= expires, per operation exactly its arguments: meter.cmdschema).
    now: UTC seconds, or None while the meter's clock is not set: then it cannot judge expiry and takes only
    acknowledgements and set-time commands (docs/security.md, "A meter without a clock")."""
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
    kind, counter = m.get(K_KIND), m.get(K_SEQ)
    # the counter is persisted as counter + 1 in 8 bytes (meter.link): below 2^64 - 1
    if not is_uint(kind, UINT64_MAX) or not is_uint(counter, UINT64_MAX - 1):
        raise HostMessageError("wrong-type", "keys 1 and 3 must be unsigned integers")
    if kind not in (COMMAND, ACK):
        raise HostMessageError("wrong-kind", "kind %d is not a command or an acknowledgement" % kind)
    if m.get(K_DEVICE) != identity.device_id:
        raise HostMessageError("wrong-device", "addressed to another meter")
    if counter <= last_counter:
        raise HostMessageError("replay", "counter %d is not above the last accepted %d" % (counter, last_counter))
    # authentic and fresh: from here on a command is answered (refused) under its counter
    why = _check_types(kind, m)
    if why is None:
        if now is None:
            if kind == COMMAND and m[K_OP] != OP_SET_TIME:
                raise HostMessageError("clock-not-set", "the clock is not set: only a set-time command is taken")
        elif now > m[K_EXPIRES]:
            raise HostMessageError("expired", "expired at %d, now %d" % (m[K_EXPIRES], now))
        why = _check_keys(kind, m)
    if why is not None:
        if kind == ACK:
            raise HostMessageError("malformed", why)
        raise _refused(counter, RESULT_MALFORMED, why)
    if kind == COMMAND:
        from meter import cmdschema  # meter.link imported it at boot (it imports this module)

        bad = cmdschema.check(m[K_OP], m.get(K_ARGS))
        if bad is not None:
            raise _refused(counter, bad[0], bad[1])
    return kind, counter, m


def _check_types(kind, m):
    """None when the times are utc and the op (command) or the acknowledged sequence number (ack) an unsigned
    integer; else the reason."""
    if not (is_uint(m.get(K_TIME), UINT32_MAX) and is_uint(m.get(K_EXPIRES), UINT32_MAX)):
        return "issued (4) and expires (9) must be utc: 0..2^32-1"
    k = K_OP if kind == COMMAND else K_ACK_SEQ
    if not is_uint(m.get(k), UINT64_MAX):
        return "key %d must be an unsigned integer" % k
    return None


def _check_keys(kind, m):
    """None when m has exactly the keys of its kind and expires no earlier than it was issued; else the reason."""
    for k in m:
        if k not in _HOST_KEYS and k != (K_OP if kind == COMMAND else K_ACK_SEQ) \
                and not (kind == COMMAND and k == K_ARGS):
            return "unknown key %r" % (k,)
    if m[K_EXPIRES] < m[K_TIME]:
        return "expires (9) before issued (4)"
    return None
