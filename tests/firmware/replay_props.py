# Replays property-test cases through the real firmware modules. Not a test file (no test_ prefix): the host
# property tests (tests/host/test_props_firmware.py) generate the cases with hypothesis under CPython, run them
# through this file twice - imported into CPython, and inside the MicroPython Unix port - and compare.
#
#   micropython tests/firmware/replay_props.py cases.json    a JSON list of cases: one JSON result line each
#   micropython tests/firmware/replay_props.py -             serve: one JSON case per stdin line, one JSON
#                                                            result line per case, until end of input
#
# In serve mode the first line printed is {"ready": <sys.implementation.name>}. A case that raises gives
# {"error": "<type>: <message>", "trace": "..."} and the run goes on. Profile cases write into a fresh directory
# under $TMPDIR (or /tmp) made for this run; every case's files are removed when the case ends, the directory
# when the run ends.
#
# Cases (plain JSON; times are UTC seconds, energies whole µWh):
#   {"kind": "registers", "tariffs": N, "chunks": [[import_uwh, export_uwh, tariff], ...], "marks": [i, ...]}
#       -> {"marks": [state after chunk i, ...], "final": state, "bytes": hex of to_bytes(), "round_trip": bool}
#   {"kind": "demand", "period": s, "tariffs": N, "ops": [["resume", t] | ["add", uwh, t_end, tariff] |
#       ["close", t] | ["reset", t] | ["save"], ...]}
#       -> {"records": [[op index, end, W, uWh, tariff, partial], ...], "resets": [[t, snapshot before]],
#           "snapshot", "max_uw": [[uW, end] for 1.6.0 .. 1.6.N], "current_uwh", "last", "resets_n", "bytes"}
#   {"kind": "profile", "capacity": rows, "per": rows per segment, "tariffs": N, "t0": t,
#       "steps": [["row", dt, [[import_uwh, export_uwh, tariff], ...], status] | ["reboot"], ...],
#       "reads": [[t_from or null, t_to or null], ...]}
#       -> {"appended": [[end, imp_mwh, exp_mwh, status, import_uwh, export_uwh, import_wh, export_wh]],
#           "rows": everything read back, "reads": [rows per window], "count", "last", "after_reboot": rows}
#   {"kind": "tz", "tz": POSIX TZ, "instants": [t, ...]}
#       -> {"rows": [[utcoffset, is_dst, name, localtime, utc_to_local, local_to_utc(utc_to_local)], ...]}
#   {"kind": "calendar", "active": dict, "passive": dict or null, "activation": t or null,
#       "instants": [t, ...], "chain": [w0, w1]}
#       -> {"at": [[tariff_at, next_switch], ...], "chain": [next_switch instants from w0 up to w1]}
import json
import os
import sys

if sys.implementation.name == "micropython":
    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    for _p in (_here + "/../../firmware", "/firmware"):
        if _p not in sys.path:
            sys.path.append(_p)

from meter.demand import Demand  # noqa: E402
from meter.profile import LoadProfile  # noqa: E402
from meter.registers import EXPORT, IMPORT, Registers  # noqa: E402
from meter.tou import TZ, Calendar, CalendarSet  # noqa: E402


def _hex(b):
    return "".join("%02x" % x for x in b)


# -- registers -----------------------------------------------------------------------------------------------

def _reg_state(r):
    n = r.tariffs
    return {
        "wh": [[r.wh(k, t) for t in range(1, n + 1)] for k in (IMPORT, EXPORT)],
        "res": [[r.residual_uwh(k, t) for t in range(1, n + 1)] for k in (IMPORT, EXPORT)],
        "tariff_uwh": [[r.tariff_uwh(k, t) for t in range(1, n + 1)] for k in (IMPORT, EXPORT)],
        "total_wh": [r.wh(IMPORT), r.wh(EXPORT)],
        "total_res": [r.residual_uwh(IMPORT), r.residual_uwh(EXPORT)],
        "total_uwh": [r.total_uwh("import"), r.total_uwh("export"), r.total_uwh()],
        "snapshot": r.snapshot(),
    }


def replay_registers(case):
    r = Registers(case["tariffs"])
    marks = set(case.get("marks", ()))
    out = []
    chunks = case["chunks"]
    for i in range(len(chunks)):
        imp, exp, tariff = chunks[i]
        r.add(imp, exp, tariff)
        if i in marks:
            out.append(_reg_state(r))
    data = r.to_bytes()
    return {"marks": out, "final": _reg_state(r), "bytes": _hex(data), "round_trip": Registers.from_bytes(data) == r}


# -- demand --------------------------------------------------------------------------------------------------

def replay_demand(case):
    d = Demand(case["period"], case["tariffs"])
    records = []
    resets = []
    ops = case["ops"]
    for i in range(len(ops)):
        op = ops[i]
        what = op[0]
        rec = None
        if what == "resume":
            rec = d.resume(op[1])
        elif what == "add":
            rec = d.add(op[1], op[2], op[3])
        elif what == "close":
            rec = d.close(op[1])
        elif what == "reset":
            resets.append([op[1], d.reset(op[1])])
        elif what == "save":
            restored = Demand.from_bytes(d.to_bytes())
            if restored != d:
                raise AssertionError("demand: op %d: from_bytes(to_bytes()) differs" % i)
            d = restored
        else:
            raise ValueError("unknown demand op %r" % (what,))
        if rec is not None:
            records.append([i] + list(rec))
    return {
        "records": records,
        "resets": resets,
        "snapshot": d.snapshot(),
        "max_uw": [list(d.maximum_uw(t)) for t in range(d.tariffs + 1)],
        "max_w": [list(d.maximum(t)) for t in range(d.tariffs + 1)],
        "current_uwh": d.current_uwh,
        "last": [d.last_end, d.last_average, d.last_uwh, d.last_tariff, d.last_partial],
        "resets_n": d.resets,
        "bytes": _hex(d.to_bytes()),
    }


# -- load profile --------------------------------------------------------------------------------------------

def rmtree(d):
    """Remove directory d and everything in it (CPython and MicroPython); a missing d is fine."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        p = d + "/" + name
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)


def replay_profile(case, flash_dir):
    cap = case["capacity"]
    seg = case["per"] * 24  # ROW_SIZE

    def boot():
        return LoadProfile(flash_dir, capacity_rows=cap, segment_bytes=seg)

    os.mkdir(flash_dir)
    try:
        lp = boot()
        r = Registers(case["tariffs"])
        end = case["t0"]
        appended = []
        for step in case["steps"]:
            if step[0] == "reboot":
                lp = boot()
                continue
            _, dt, chunks, status = step
            for imp, exp, tariff in chunks:
                r.add(imp, exp, tariff)
            end += dt
            # the row exactly as meter/report.py builds it: cumulative mWh, rounded down from the exact µWh
            row = (end, r.total_uwh("import") // 1000, r.total_uwh("export") // 1000, status)
            lp.append(row[0], row[1], row[2], row[3])
            appended.append(list(row) + [r.total_uwh("import"), r.total_uwh("export"), r.wh(IMPORT), r.wh(EXPORT)])
        reads = []
        for t_from, t_to in case["reads"]:
            reads.append([list(x) for x in lp.read(t_from, t_to)])
        last = lp.last()
        out = {
            "appended": appended,
            "rows": [list(x) for x in lp.read()],
            "reads": reads,
            "count": lp.count,
            "last": None if last is None else list(last),
            "after_reboot": [list(x) for x in boot().read()],
        }
    finally:
        rmtree(flash_dir)
    return out


# -- time of use ---------------------------------------------------------------------------------------------

def replay_tz(case):
    tz = TZ(case["tz"])
    rows = []
    for t in case["instants"]:
        local = tz.utc_to_local(t)
        rows.append([tz.utcoffset(t), tz.is_dst(t), tz.name(t), list(tz.localtime(t)), local,
                     tz.local_to_utc(local)])
    return {"rows": rows}


def replay_calendar(case):
    if case.get("passive") is None:
        cal = Calendar(case["active"])
    else:
        cal = CalendarSet(case["active"], case["passive"], case["activation"])
    at = [[cal.tariff_at(t), cal.next_switch(t)] for t in case["instants"]]
    w0, w1 = case["chain"]
    chain = []
    t = w0
    while True:
        n = cal.next_switch(t)
        if n <= t:
            raise AssertionError("next_switch(%d) = %d does not move forward" % (t, n))
        if n > w1:
            break
        chain.append(n)
        t = n
    return {"at": at, "chain": chain}


# -- driver --------------------------------------------------------------------------------------------------

def _trace(e):
    if hasattr(sys, "print_exception"):
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        return buf.getvalue()
    import traceback
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def run(case, flash_dir):
    """The result of one case (a dict, or its JSON text); `flash_dir` (not existing yet) is where a profile
    case keeps its files."""
    try:
        if isinstance(case, str):
            case = json.loads(case)
        kind = case.get("kind")
        if kind == "registers":
            return replay_registers(case)
        if kind == "demand":
            return replay_demand(case)
        if kind == "profile":
            return replay_profile(case, flash_dir)
        if kind == "tz":
            return replay_tz(case)
        if kind == "calendar":
            return replay_calendar(case)
        raise ValueError("unknown case kind %r" % (kind,))
    except Exception as e:  # noqa: BLE001 - reported to the host, which fails the property with it
        return {"error": "%s: %s" % (type(e).__name__, e), "trace": _trace(e)}


def _run_dir():
    import binascii
    base = (os.getenv("TMPDIR") or "/tmp").rstrip("/")
    d = "%s/meterkit-replay-%s" % (base, binascii.hexlify(os.urandom(6)).decode())
    os.mkdir(d)
    return d


def _collect():
    try:
        import gc
        gc.collect()  # one case's garbage must not fragment the heap for the next (big JSON lines)
    except ImportError:
        pass


def main(argv):
    root = _run_dir()
    n = 0
    try:
        if argv and argv[0] != "-":
            with open(argv[0]) as f:
                cases = json.loads(f.read())
            for case in cases:
                n += 1
                _collect()
                print(json.dumps(run(case, "%s/c%d" % (root, n))))
            return 0
        print(json.dumps({"ready": sys.implementation.name}))
        while True:
            line = sys.stdin.readline()
            if not line:
                return 0
            if not line.strip():
                continue
            n += 1
            _collect()
            print(json.dumps(run(line, "%s/c%d" % (root, n))))
    finally:
        rmtree(root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
