"""Property tests replayed on the firmware: the same hypothesis cases run through the pure firmware modules under
CPython and inside the MicroPython Unix port (tests/firmware/replay_props.py), and both are judged.

One `micropython` process serves the whole file: each case goes to it as one JSON line and comes back as one
result line, so hypothesis generates, runs and shrinks every example against the real interpreter without
starting a process per example. For every case:

- the two interpreters give identical results (JSON-identical, so an int is never a bool and nothing is a float);
- registers, under random load (µWh chunks from 0 to 10^18, across MicroPython's small-int limits) and random
  tariff switches: every tariff register is floor(the energy fed under that tariff), its residual the rest, the
  totals are the sums, and the saved bytes decode (in CPython) to exactly that energy;
- demand: a random timeline (tests/host/test_demand_props.py's strategy and brute-force oracle) fed as the meter
  loop does, also in 2034 (seconds since 2000 above 2^30), 2038 (Unix seconds above 2^31) and 2105: the closed
  periods and the maxima per tariff with their timestamps equal the brute-force recomputation;
- load profile: cumulative rows appended while registers grow by random chunks, with reboots, read back by
  random time ranges: every row is the register value at its end, the rows read are exactly those in the range,
  and the deltas over a range sum to the register growth (each within 1 mWh of the energy fed);
- time of use: UTC -> local conversion against zoneinfo (>= 10,000 instants around DST transitions, four zones,
  2020-2040), and random calendars' tariff_at / next_switch against a minute-by-minute brute force.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import select
import subprocess
import tempfile
import time
import zoneinfo
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_demand_props import _brute, _drive, timelines
from test_tou_props import brute_force, calendar_dict, changes, window, window_dates, zone_for
from test_tou_zoneinfo import _first_utc_reading, expected, zone_transitions

from meter.registers import Registers
from meterkit.device.toolchain import micropython_cmd, mp_env

REPLAY = Path(__file__).resolve().parents[1] / "firmware" / "replay_props.py"
SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
UTC = timezone.utc
E2000 = 946684800
UWH = 1_000_000


def _load_replay():
    spec = importlib.util.spec_from_file_location("replay_props", REPLAY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


replay_props = _load_replay()


# ------------------------------------------------------------------------------------------- the interpreters


class MicroPythonReplayer:
    """`micropython replay_props.py -`: one JSON case per line in, one JSON result per line out.

    A case that kills the interpreter fails with everything it printed, and the next case gets a fresh
    interpreter (`deaths` counts them), so one crash cannot hide behind errors in the cases after it."""

    LINE_TIMEOUT_S = 300  # a guard against a hung interpreter, not a speed requirement
    # The whole case is parsed JSON in RAM (a demand case can hold 40 000 operations): a test-harness heap,
    # not the meter's budget. Nothing on a board ever holds such a list.
    HEAP = "64M"

    def __init__(self):
        self.proc = None
        self.cases = 0
        self.deaths = 0
        self._start()

    def _start(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(micropython_cmd(REPLAY, "-", heap=self.HEAP), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=mp_env([REPLAY.parent]),
                                     cwd=str(REPLAY.parent))
        self.buf = b""
        hello = json.loads(self._line())
        assert hello == {"ready": "micropython"}, hello

    def _stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-4000:]

    def _line(self):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.LINE_TIMEOUT_S
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"micropython gave no answer in {self.LINE_TIMEOUT_S} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b""
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _died(self, why):
        self.deaths += 1
        proc = self.proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            proc.kill()
        rest = self.buf + proc.stdout.read()
        proc.wait()
        report = (f"micropython failed on case {self.cases} ({why}, exit {proc.returncode}):\n"
                  f"{rest.decode(errors='replace')[-4000:]}\n{self._stderr()}")
        self.err.close()
        self.proc = None
        return RuntimeError(report)

    def __call__(self, case):
        if self.proc is None:
            self._start()
        self.cases += 1
        try:
            self.proc.stdin.write(json.dumps(case).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._line()
        except (OSError, TimeoutError) as e:
            raise self._died(repr(e)) from None
        try:
            return json.loads(line)
        except ValueError:
            # not a result: the interpreter itself failed (an uncaught error, out of memory)
            raise self._died(f"printed {line[:200]!r}") from None

    def close(self):
        if self.proc is None:
            return
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=60)
        err = self._stderr()
        self.err.close()
        assert rc == 0, (rc, err)


@pytest.fixture(scope="module")
def mp():
    r = MicroPythonReplayer()
    yield r
    r.close()


@pytest.fixture(scope="module")
def replay(mp, tmp_path_factory):
    """case -> result, after checking that CPython and MicroPython agree exactly and neither raised."""
    root = tmp_path_factory.mktemp("replay")
    numbers = itertools.count()

    def run(case):
        here = json.loads(json.dumps(replay_props.run(case, str(root / f"c{next(numbers)}"))))
        assert "error" not in here, here.get("trace")
        there = mp(case)
        assert "error" not in there, there.get("trace")
        diff = first_difference(here, there)
        assert diff is None, f"CPython and MicroPython differ at {diff}"
        return here

    return run


def first_difference(a, b, path="$"):
    """Where two JSON values differ (types too: True is not 1), or None if they are identical."""
    if type(a) is not type(b):
        return f"{path}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in sorted(a):
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def test_replay_runs_in_micropython_and_reports_errors(mp, replay):
    # the server really is the Unix port, and a case that raises is reported, not lost (so a property fails)
    assert mp.proc is not None and mp.proc.poll() is None
    bad = mp({"kind": "registers", "tariffs": 2, "chunks": [[1, 2, 3]]})
    assert bad["error"].startswith("ValueError: tariff must be 1..2"), bad
    assert mp({"kind": "nonsense"})["error"].startswith("ValueError: unknown case kind")
    assert first_difference({"a": [1, True]}, {"a": [1, 1]}) is not None
    assert replay({"kind": "registers", "tariffs": 1, "chunks": [[2_500_000, 0, 1]], "marks": []})["final"][
        "wh"] == [[2], [0]]


# ----------------------------------------------------------------------------------------------- registers

UWH_CHUNK = st.one_of(
    st.integers(0, 3 * UWH),
    st.integers(0, 10**12),
    st.sampled_from([0, 1, UWH - 1, UWH, UWH + 1, 2**30 - 1, 2**30, 2**31, 2**62 - 1, 2**62, 10**18]),
)


@st.composite
def register_runs(draw):
    tariffs = draw(st.integers(1, 16))
    runs = draw(st.lists(st.tuples(st.integers(1, tariffs),
                                   st.lists(st.tuples(UWH_CHUNK, UWH_CHUNK), min_size=1, max_size=20)),
                         min_size=1, max_size=12))
    chunks = [[i, e, t] for t, cs in runs for i, e in cs]
    # a snapshot wherever the tariff is about to switch, and at the end
    marks = [k for k in range(len(chunks)) if k + 1 == len(chunks) or chunks[k + 1][2] != chunks[k][2]]
    return {"kind": "registers", "tariffs": tariffs, "chunks": chunks, "marks": marks}


def check_register_state(state, fed, tariffs):
    """fed[k][t - 1]: µWh fed in direction k under tariff t."""
    for k in (0, 1):
        for t in range(tariffs):
            assert state["tariff_uwh"][k][t] == fed[k][t]
            assert state["wh"][k][t] == fed[k][t] // UWH, (k, t + 1)
            assert state["res"][k][t] == fed[k][t] % UWH, (k, t + 1)
        all_uwh = sum(fed[k])
        assert state["total_wh"][k] == sum(state["wh"][k]), "the total register is the sum of the tariffs"
        assert state["total_res"][k] == sum(state["res"][k])
        assert state["total_uwh"][k] == all_uwh
        # the total can lag floor(all energy) only by the tariffs' incomplete Wh: at most tariffs - 1
        assert all_uwh // UWH - (tariffs - 1) <= state["total_wh"][k] <= all_uwh // UWH
    assert state["total_uwh"][2] == sum(fed[0]) + sum(fed[1])
    snap = state["snapshot"]
    assert snap["1.8.0"] == state["total_wh"][0] and snap["2.8.0"] == state["total_wh"][1]
    for t in range(1, tariffs + 1):
        assert (snap[f"1.8.{t}"], snap[f"2.8.{t}"]) == (state["wh"][0][t - 1], state["wh"][1][t - 1])
    assert snap["residual_uwh"] == {"1.8.0": state["total_res"][0], "2.8.0": state["total_res"][1]}


@settings(SETTINGS, max_examples=150)
@given(register_runs())
def test_registers_sum_to_totals(replay, case):
    res = replay(case)
    n = case["tariffs"]
    fed = [[0] * n, [0] * n]
    marks = iter(res["marks"])
    for k, (imp, exp, t) in enumerate(case["chunks"]):
        fed[0][t - 1] += imp
        fed[1][t - 1] += exp
        if k in case["marks"]:
            check_register_state(next(marks), fed, n)
    assert next(marks, None) is None
    check_register_state(res["final"], fed, n)
    assert res["round_trip"] is True
    saved = Registers.from_bytes(bytes.fromhex(res["bytes"]))  # MicroPython's bytes, decoded by CPython
    assert [[saved.tariff_uwh(k, t) for t in range(1, n + 1)] for k in (0, 1)] == fed


# -------------------------------------------------------------------------------------------------- demand

T_DEMAND = 1767225600  # test_demand_props.T0, 2026-01-01


def _hours_after(t):
    """The smallest multiple of 3600 s that moves T_DEMAND to t or later (keeps every period boundary)."""
    return -((T_DEMAND - t) // 3600) * 3600


# 2026; 2034 (seconds since 2000 above 2^30, the ESP32's small-int limit); 2038 (Unix seconds above 2^31);
# 2105, a day before demand's u32 time limit
SHIFTS = [0, _hours_after(E2000 + 2**30), _hours_after(2**31), _hours_after(0xFFFFFFFF - 3600 - 2 * 86400)]


def demand_ops(period, tariffs, t_start, energy, tariff, metered, batches, events):
    """The operations test_demand_props._drive performs on a Demand, as data (no Demand involved).

    Returns (ops, reset instants, t_final)."""
    n = len(energy)
    ops = []
    ev = list(events)
    b = 0
    started = False

    def run_events(upto):
        while ev and ev[0][0] <= upto:
            _, what = ev.pop(0)
            t = t_start + upto
            if not started:
                continue
            if what == "reset":
                ops.append(["close", t])
                ops.append(["reset", t])
            elif what == "save":
                ops.append(["save"])
            else:
                ops.append(["close", t])

    i = 0
    up = False
    while i < n:
        if not metered[i]:
            up = False
            i += 1
            run_events(i)
            continue
        if not up:
            ops.append(["resume", t_start + i])
            started = up = True
        length = batches[b % len(batches)]
        b += 1
        t = t_start + i
        boundary = t - t % period + period
        stop = min(i + length, n, boundary - t_start)
        k = i + 1
        while k < stop and tariff[k] == tariff[i] and metered[k]:
            k += 1
        ops.append(["add", sum(energy[i:k]), t_start + k, tariff[i]])
        ops.append(["close", t_start + k])
        i = k
        run_events(i)
    t_final = t_start + n
    ops.append(["close", t_final])
    return ops, [op[1] for op in ops if op[0] == "reset"], t_final


@settings(SETTINGS, max_examples=100)
@given(timelines(), st.sampled_from(SHIFTS))
def test_demand_maxima_match_brute_force(replay, tl, shift):
    period, tariffs, t_start, energy, tariff, metered, batches, events = tl
    t_start += shift
    tl = (period, tariffs, t_start, energy, tariff, metered, batches, events)
    ops, reset_times, t_final = demand_ops(*tl)
    res = replay({"kind": "demand", "period": period, "tariffs": tariffs, "ops": ops})
    closed, open_uwh, at_resets, final, final_exact = _brute(
        period, tariffs, t_start, energy, tariff, metered, reset_times, t_final)

    records = [tuple(r[1:]) for r in res["records"]]
    for r in records:
        if r[3] == 0:  # nothing reported in the period: no tariff, never a maximum
            assert r[1:] == (0, 0, 0, True), r
    assert [r for r in records if r[3] != 0] == closed
    assert [snap for _, snap in res["resets"]] == at_resets
    assert [t for t, _ in res["resets"]] == reset_times and res["resets_n"] == len(reset_times)
    assert res["snapshot"] == final
    for key in range(tariffs + 1):
        uwh, end = final_exact.get(key, (0, 0))
        assert res["max_uw"][key] == [uwh * 3600 // period, end], key
        assert res["max_w"][key] == final[f"1.6.{key}"]
    assert res["current_uwh"] == open_uwh
    if records:
        assert tuple(res["last"]) == records[-1]
    # the operations replayed are the ones the meter-loop driver of test_demand_props performs
    _, driven, _, _ = _drive(*tl)
    assert [tuple(r) for r in driven] == records


# ------------------------------------------------------------------------------------------------- profile

PROFILE_STARTS = [1_793_491_200, E2000 + 2**30 - 7200, 2**31 - 7200]


@st.composite
def profile_runs(draw):
    tariffs = draw(st.integers(1, 4))
    # up to 10^13 µWh a chunk: the cumulative mWh outgrow 32 bits (the rows' u48 high word)
    energy = st.one_of(st.integers(0, 5 * UWH), st.sampled_from([0, 999, 1000, 1001, 10**9, 10**12, 10**13]))
    chunk = st.tuples(energy, st.one_of(st.just(0), energy), st.integers(1, tariffs))
    row = st.tuples(st.just("row"), st.sampled_from([1, 300, 900, 900, 3600, 3 * 86400]),
                    st.lists(chunk, max_size=6), st.integers(0, 0xFFFF))
    steps = draw(st.lists(st.one_of(row, row, row, st.just(("reboot",))), min_size=1, max_size=60))
    t0 = draw(st.sampled_from(PROFILE_STARTS))
    ends, t = [], t0
    for s in steps:
        if s[0] == "row":
            t += s[1]
            ends.append(t)
    # ranges from one row's end to another's, moved by up to 10 minutes (often exactly onto a row or one second
    # off), now and then open at one end
    shift = st.one_of(st.integers(-600, 600), st.sampled_from([-1, 0, 0, 1]), st.sampled_from([-1, 0, 1]), st.none())
    reads = [[None, None]]
    for a, b, da, db in draw(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99), shift, shift), max_size=6)):
        lo, hi = sorted((ends[a % len(ends)], ends[b % len(ends)])) if ends else (t0, t0)
        reads.append([None if da is None else lo + da, None if db is None else hi + db])
    return {"kind": "profile", "capacity": draw(st.integers(1, 40)), "per": draw(st.integers(1, 12)),
            "tariffs": tariffs, "t0": t0, "steps": [list(s) for s in steps], "reads": reads}


@settings(SETTINGS, max_examples=150)
@given(profile_runs())
def test_profile_deltas_sum_to_register_growth(replay, case):
    res = replay(case)
    n = case["tariffs"]
    # the oracle: energy fed per direction and tariff up to each row, from the case alone
    fed = [[0] * n, [0] * n]
    want = []   # (end, imp_mwh, exp_mwh, status)
    energy = []  # exact cumulative µWh (import, export) at each row
    wh = []      # import, export Wh registers at each row
    end = case["t0"]
    for s in case["steps"]:
        if s[0] != "row":
            continue
        for imp, exp, t in s[2]:
            fed[0][t - 1] += imp
            fed[1][t - 1] += exp
        end += s[1]
        cum = (sum(fed[0]), sum(fed[1]))
        want.append((end, cum[0] // 1000, cum[1] // 1000, s[3]))
        energy.append(cum)
        wh.append(tuple(sum(x // UWH for x in fed[k]) for k in (0, 1)))
    got = [tuple(r) for r in res["appended"]]
    assert [r[:4] for r in got] == want, "each row is the registers' value at its end, in mWh rounded down"
    assert [r[4:6] for r in got] == energy and [r[6:8] for r in got] == wh

    cap = case["capacity"]
    held = want[-cap:]
    assert [tuple(r) for r in res["rows"]] == held
    assert [tuple(r) for r in res["after_reboot"]] == held
    assert res["count"] == len(held)
    assert (tuple(res["last"]) if res["last"] is not None else None) == (want[-1] if want else None)

    first_held = len(want) - len(held)
    for (lo, hi), rows in zip(case["reads"], res["reads"], strict=True):
        rows = [tuple(r) for r in rows]
        assert rows == [r for r in held if (lo is None or lo <= r[0]) and (hi is None or r[0] <= hi)], (lo, hi)
        if not rows:
            continue
        i = want.index(rows[0])
        j = i + len(rows) - 1
        assert want[i:j + 1] == rows, "a range read returns consecutive rows"
        assert i >= first_held
        # the interval deltas of the rows read (each row minus the one before it) ...
        prev = want[i - 1] if i > 0 else (case["t0"], 0, 0, 0)
        prev_energy = energy[i - 1] if i > 0 else (0, 0)
        for k in (1, 2):
            deltas = [rows[m][k] - (rows[m - 1][k] if m else prev[k]) for m in range(len(rows))]
            assert all(d >= 0 for d in deltas), "cumulative registers never go down"
            # ... sum to the growth of the register over the range ...
            assert sum(deltas) == energy[j][k - 1] // 1000 - prev_energy[k - 1] // 1000
            # ... which is within 1 mWh of the energy metered in those intervals (whole mWh, rounded down)
            fed_uwh = energy[j][k - 1] - prev_energy[k - 1]
            assert -1000 < sum(deltas) * 1000 - fed_uwh < 1000
            for m, d in enumerate(deltas):
                e = energy[i + m][k - 1] - (energy[i + m - 1][k - 1] if i + m > 0 else 0)
                assert -1000 < d * 1000 - e < 1000, "every interval's delta is its own energy to the mWh"


# ----------------------------------------------------------------------------------------------- time of use

# (POSIX TZ, IANA zone): tzdata follows these rules from 2020 to 2040 (checked below, from zoneinfo alone)
TZ_ZONES = [
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Madrid"),
    ("PST8PDT,M3.2.0,M11.1.0", "America/Los_Angeles"),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),               # southern: DST spans new year
    ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "Australia/Lord_Howe"),    # half-hour offset, 30-minute DST
]
TZ_YEARS = range(2020, 2041)
_transitions: dict[tuple[str, int], list[int]] = {}


def transitions(name, year):
    key = (name, year)
    if key not in _transitions:
        _transitions[key] = zone_transitions(zoneinfo.ZoneInfo(name), year)
    return _transitions[key]


def check_tz_rows(name, instants, rows):
    """The firmware's answers for `instants` against zoneinfo. Returns how many instants were compared."""
    zone = zoneinfo.ZoneInfo(name)
    assert len(rows) == len(instants)
    for t, (off, dst, abbr, fields, local, first) in zip(instants, rows, strict=True):
        want = expected(zone, t)
        assert (off, dst, abbr, tuple(fields)) == want, (name, t, datetime.fromtimestamp(t, UTC))
        assert local == t + want[0]
        # local_to_utc of the reading at t: the first instant showing it (the earlier one in a fall-back fold)
        naive = datetime.fromtimestamp(local, UTC).replace(tzinfo=None)
        assert first == _first_utc_reading(zone, naive, []), (name, t)
    return len(instants)


def test_utc_to_local_agrees_with_zoneinfo_around_transitions(replay):
    """Deterministic sweep: every zone, every year 2020-2040, both transitions: every second of +-10 s, every
    150 s of +-3 h and 20 random instants of +-4 h around each. Transitions come from zoneinfo alone."""
    rng = random.Random(20200329)
    compared = {}
    past_2034 = 0
    for posix, name in TZ_ZONES:
        for y in TZ_YEARS:
            trs = transitions(name, y)
            assert len(trs) == 2, (name, y, trs)
            instants = []
            for tr in trs:
                instants += range(tr - 10, tr + 11)
                instants += range(tr - 3 * 3600, tr + 3 * 3600 + 1, 150)
                instants += [tr + rng.randint(-4 * 3600, 4 * 3600) for _ in range(20)]
            res = replay({"kind": "tz", "tz": posix, "instants": instants})
            compared[name] = compared.get(name, 0) + check_tz_rows(name, instants, res["rows"])
            past_2034 += sum(1 for t in instants if t - E2000 >= 2**30)
    assert len(compared) >= 3 and min(compared.values()) >= 3000, compared
    assert sum(compared.values()) >= 10_000, compared
    assert past_2034 >= 2000, "instants where seconds since 2000 exceed 2^30 (ESP32 small ints)"


@settings(SETTINGS, max_examples=60)
@given(st.sampled_from(TZ_ZONES), st.sampled_from(TZ_YEARS), st.integers(0, 1),
       st.lists(st.one_of(st.integers(-4 * 3600, 4 * 3600), st.integers(-90, 90)), min_size=1, max_size=200))
def test_random_instants_near_transitions_agree_with_zoneinfo(replay, zone, year, which, offsets):
    posix, name = zone
    tr = transitions(name, year)[which]
    instants = [tr + d for d in offsets]
    res = replay({"kind": "tz", "tz": posix, "instants": instants})
    assert check_tz_rows(name, instants, res["rows"]) == len(offsets)


@settings(SETTINGS, max_examples=40)
@given(st.data())
def test_calendar_matches_brute_force(replay, data):
    posix, name, w0, w1 = data.draw(window())
    zone = zone_for(posix, name)
    dates = window_dates(zone, w0, w1)
    active = data.draw(calendar_dict(posix, dates))
    case = {"kind": "calendar", "active": active, "passive": None, "activation": None, "chain": [w0, w1]}
    grid = brute_force(active, zone, w0, w1)
    if data.draw(st.booleans()):
        # a passive calendar in the same zone, activated on a whole minute inside the window
        passive = data.draw(calendar_dict(posix, dates))
        at = data.draw(st.integers(w0 // 60 + 1, w1 // 60 - 1)) * 60
        case.update(passive=passive, activation=at)
        gp = brute_force(passive, zone, w0, w1)
        grid = {u: (grid[u] if u < at else gp[u]) for u in grid}
    minutes = sorted(u for u in grid if w0 <= u <= w1)
    instants = data.draw(st.lists(st.sampled_from(minutes), min_size=1, max_size=60))
    instants += [u + 37 for u in instants]  # inside the minute: every switch falls on a whole minute
    if case["activation"] is not None:
        instants += [case["activation"] - 1, case["activation"]]
    case["instants"] = instants
    res = replay(case)

    want_changes = sorted(changes(grid, w0, w1))
    assert res["chain"] == want_changes
    for t, (got_tariff, got_next) in zip(instants, res["at"], strict=True):
        assert got_tariff == grid[t // 60 * 60], (t, datetime.fromtimestamp(t, zone))
        later = [u for u in want_changes if u > t]
        if later:
            assert got_next == later[0], (t, got_next, later[0])
        else:
            assert got_next > w1, (t, got_next)


def test_all_cases_went_through_one_micropython_process(mp):
    # every replayed case above was served by the one interpreter started for this file
    assert mp.deaths == 0 and mp.proc.poll() is None
    assert mp.cases > 300, mp.cases
