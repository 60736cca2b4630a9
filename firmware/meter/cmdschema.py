# The arguments of each head-end command operation (key 11), written once: the meter refuses a command whose
# arguments are not exactly these (meter.messages.verify_host, meter.commands), and the head-end checks what it
# queues and signs against the same table (meterkit.headend.commands), so it never signs what a meter refuses.
# Imported by meter.link at boot, not with the first command: loaded later, from .mpy, its code had to find
# room in a fragmented heap and was what ran out (docs/performance.md, "Heap on a board").
# Pure: runs on the meter and under CPython.
#
# What an operation's arguments may hold beyond their types (first <= last, a calendar meter.tou takes, a
# time after 2025) is the operation's own business (meter.link back-fill, meter.commands): refused with -3/-4.
from meter.messages import (A_ACTIVATION, A_AUTO_RECONNECT, A_CALENDAR, A_CAPTURE_PERIOD_S, A_CONTROL_MODE,
                            A_DEMAND_PERIOD_S, A_DR_ID, A_DURATION_S, A_EMERGENCY_DURATION_S, A_EMERGENCY_GROUPS,
                            A_EMERGENCY_ID, A_EMERGENCY_START, A_FIRST, A_FORCE, A_FROM, A_GROUPS, A_KEY, A_LAST,
                            A_LIMIT_W, A_MIN_OVER_S, A_MIN_UNDER_S, A_OVER_CURRENT_MA, A_OVER_VOLTAGE_MV,
                            A_READING_S, A_SHED, A_START, A_THRESHOLD_EMERGENCY, A_THRESHOLD_NORMAL, A_TO, A_UTC,
                            GROUPS_MAX, OP_BACKFILL, OP_BILLING_RESET, OP_CALENDAR, OP_CONFIG, OP_DISCONNECT,
                            OP_DR_EVENT, OP_KEY_ROTATE, OP_LIMITER, OP_PROFILE, OP_REBOOT, OP_RECONNECT, OP_SET_TIME,
                            RESULT_BAD_ARGS, RESULT_UNKNOWN_OP, UINT32_MAX, UINT64_MAX, is_uint)
from meter.messages import (A_DATA, A_MANIFEST, A_OFFSET, FW_CHUNK_MAX, FW_MANIFEST_MAX, OP_FW_ACTIVATE, OP_FW_CHUNK,
                            OP_FW_MANIFEST)

# argument types; + T_OPTIONAL: the argument may be left out
T_UTC = 1  # unsigned integer 0..2^32-1: UTC seconds
T_SEQ = 2  # unsigned integer 0..2^64-1: a frame sequence number
T_BOOL = 3
T_CALENDAR = 4  # a map with text keys holding maps, arrays, text, integers, booleans (no tag, no bytes, no null)
T_UINT = 5  # unsigned integer 0..2^32-1: watts, seconds, ids, milliamps
T_GROUPS = 6  # an array of 1..GROUPS_MAX group ids, each 0..65535
T_KEY = 7  # a 65-byte byte string holding an uncompressed P-256 point (0x04 first)
T_MANIFEST = 8  # a byte string of 1..FW_MANIFEST_MAX bytes (a signed firmware manifest)
T_CHUNK = 9  # a byte string of 1..FW_CHUNK_MAX bytes (firmware payload)
T_OPTIONAL = 16
_TYPE = 15  # t & _TYPE: the type without T_OPTIONAL
TYPE_NAMES = ("", "utc (0..2^32-1)", "a sequence number (0..2^64-1)", "true or false", "a calendar map",
              "an unsigned integer (0..2^32-1)", "1..%d group ids (0..65535)" % GROUPS_MAX,
              "a 65-byte uncompressed P-256 key", "1..%d bytes" % FW_MANIFEST_MAX, "1..%d bytes" % FW_CHUNK_MAX)
_O = T_OPTIONAL

# per operation: (argument key, type, argument key, type, ...), keys ascending; () takes no arguments (key 11
# left out, or an empty map)
OP_ARGS = {
    OP_BACKFILL: (A_FIRST, T_SEQ, A_LAST, T_SEQ),
    OP_CALENDAR: (A_CALENDAR, T_CALENDAR, A_ACTIVATION, T_UTC),
    OP_BILLING_RESET: (),
    OP_PROFILE: (A_FROM, T_UTC, A_TO, T_UTC),
    OP_SET_TIME: (A_UTC, T_UTC, A_FORCE, T_BOOL + T_OPTIONAL),
    OP_DISCONNECT: (),
    OP_RECONNECT: (),
    OP_LIMITER: (A_THRESHOLD_NORMAL, T_UINT + _O, A_THRESHOLD_EMERGENCY, T_UINT + _O, A_MIN_OVER_S, T_UINT + _O,
                 A_MIN_UNDER_S, T_UINT + _O, A_EMERGENCY_ID, T_UINT + _O, A_EMERGENCY_START, T_UTC + _O,
                 A_EMERGENCY_DURATION_S, T_UINT + _O, A_EMERGENCY_GROUPS, T_GROUPS + _O, A_AUTO_RECONNECT,
                 T_BOOL + _O),
    OP_DR_EVENT: (A_DR_ID, T_UINT, A_START, T_UTC, A_DURATION_S, T_UINT, A_LIMIT_W, T_UINT + _O, A_SHED,
                  T_BOOL + _O),
    OP_CONFIG: (A_DEMAND_PERIOD_S, T_UINT + _O, A_CAPTURE_PERIOD_S, T_UINT + _O, A_READING_S, T_UINT + _O,
                A_OVER_CURRENT_MA, T_UINT + _O, A_OVER_VOLTAGE_MV, T_UINT + _O, A_CONTROL_MODE, T_UINT + _O,
                A_GROUPS, T_GROUPS + _O),
    OP_REBOOT: (),
    OP_KEY_ROTATE: (A_KEY, T_KEY),
    OP_FW_MANIFEST: (A_MANIFEST, T_MANIFEST),
    OP_FW_CHUNK: (A_OFFSET, T_UINT, A_DATA, T_CHUNK),
    OP_FW_ACTIVATE: (),
}
NONEMPTY = (OP_LIMITER, OP_CONFIG)  # every argument optional, but a command that sets nothing is refused


def _plain(v):
    """v holds only maps with text keys, arrays, text, integers and booleans (what a JSON calendar holds); the
    decoder bounds the nesting (8)."""
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str) or not _plain(v[k]):
                return False
        return True
    if isinstance(v, list):
        for x in v:
            if not _plain(x):
                return False
        return True
    return isinstance(v, (str, int))  # bool is an int; a Tag, bytes or None is not


def typed(v, t):
    """v is of argument type t (T_*, without T_OPTIONAL)."""
    if t == T_UTC:
        return is_uint(v, UINT32_MAX)
    if t == T_SEQ:
        return is_uint(v, UINT64_MAX)
    if t == T_BOOL:
        return v is True or v is False
    if t == T_UINT:
        return is_uint(v, UINT32_MAX)
    if t == T_GROUPS:
        if not isinstance(v, list) or not 0 < len(v) <= GROUPS_MAX:
            return False
        for g in v:
            if not is_uint(g, 0xFFFF):
                return False
        return True
    if t == T_KEY:
        return isinstance(v, bytes) and len(v) == 65 and v[0] == 4
    if t == T_MANIFEST or t == T_CHUNK:
        return isinstance(v, bytes) and 0 < len(v) <= (FW_MANIFEST_MAX if t == T_MANIFEST else FW_CHUNK_MAX)
    return isinstance(v, dict) and _plain(v)


def check(op, args):
    """None when `args` (a map, or None when key 11 is left out) are exactly what operation `op` takes; else
    (RESULT_UNKNOWN_OP or RESULT_BAD_ARGS, the reason)."""
    spec = OP_ARGS.get(op) if type(op) is int else None
    if spec is None:
        return RESULT_UNKNOWN_OP, "unknown operation %r" % (op,)
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        return RESULT_BAD_ARGS, "bad arguments: not a map"
    found = 0
    for i in range(0, len(spec), 2):
        k, t = spec[i], spec[i + 1]
        if k in args:
            found += 1
            if not typed(args[k], t & _TYPE):
                return RESULT_BAD_ARGS, "bad arguments: %d must be %s" % (k, TYPE_NAMES[t & _TYPE])
        elif not t & T_OPTIONAL:
            return RESULT_BAD_ARGS, "bad arguments: %d missing" % k
    if not found and op in NONEMPTY:
        return RESULT_BAD_ARGS, "bad arguments: nothing to set"
    if found != len(args):
        for k in args:
            if not _has(spec, k):
                return RESULT_BAD_ARGS, "bad arguments: unknown key %r" % (k,)
    return None


def _has(spec, k):
    for i in range(0, len(spec), 2):
        if spec[i] == k:
            return True
    return False
