"""A long simulated run billed twice: `meterkit billcheck`.

    meterkit billcheck [--days 35] [--start 2026-10-05] [--calendar FILE] [--prices FILE] [--scenario mixed]
                       [--seed 1] [--billing-day 1] [--reading-s 900] [--db PATH] [--json] [--quiet]

One simulated meter (the real firmware under the MicroPython Unix port, `meterkit.sim.runner.run_sim`) runs for --days
from --start (local time in the calendar's zone unless an offset is given) with the TOU calendar and billing day.
Its signed frames go through a real concentrator (TCP on 127.0.0.1) into a SQLite head-end database, and the
period that the meter's billing snapshot closes is billed with `meterkit.billing.bill`, the code behind
`meterkit bill`. The meter was commissioned inside that period, so the bill opens at its first hello (empty
registers) and closes at the snapshot.

Beside it, the **ground truth** is computed here from the simulator's load scenario alone, without meter code:

- energy: `sim.scenarios.make(scenario, seed, tod_s=start % 86400).energy(t0, t1)`, the exact integral of v*i
  (import and export parts) over scenario seconds since the simulation started, built exactly as the firmware's
  `sim.hardware.open_sim` builds it;
- tariffs: the calendar JSON resolved here (season -> week -> day profile, special days, a passive calendar's
  activation) with Python's `zoneinfo` for local time: the calendar's POSIX TZ string becomes the footer of a
  one-type TZif file that `zoneinfo.ZoneInfo.from_file` reads, so zoneinfo's own POSIX-rule code applies it. A
  switch at local D hh:mm happens at the first UTC instant whose local time reads D hh:mm or later
  (docs/tariffs.md). `meter.tou` is not used;
- maximum demand: the largest exact import energy over a UTC-aligned 15-minute period (start, start + 900] (the
  first one clipped to the simulation start), as an average power; per tariff, the periods whose last second is
  in that tariff;
- money: the same price file, read here with `json.loads(parse_float=Decimal)`, every amount exact in Decimal,
  the total rounded once, half away from zero, to the currency's minor unit.

**The rule** (exit status 0 only if all hold):

- the meter sent exactly one billing snapshot and the database stored exactly one, and its period end (key 6)
  is the boundary computed here;
- every tariff register 1.8.t / 2.8.t of the snapshot (the billed quantity: closing register minus 0 at
  commissioning) is within 1 Wh of floor(truth_t), the exact truth in Wh rounded down:
  |register - floor(truth_t)| <= 1. A meter register is floor(its own measured energy), so a meter whose
  measured energy is within 1 Wh of the truth always passes, and one that is 1 Wh or more off may fail;
- each total 1.8.0 / 2.8.0 is within 1 Wh of the sum over t of floor(truth_t) (the register definition: the
  totals are the sums of the tariff registers);
- maximum demand 1.6.0 and each 1.6.t in the snapshot are within 1 W of floor(truth W) (the meter also rounds
  demand down to whole W).

The difference in money follows from the quantities; it is shown, not tested separately.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import decimal
import importlib.util
import io
import json
import math
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from meter.messages import BILLING
from meterkit.billing.money import plain_number
from meterkit.timefmt import utc_text

DEFAULT_DAYS = 35.0
DEFAULT_START = "2026-10-05"  # with billing day 1: one boundary, 2026-11-01 00:00 local, inside 35 days
DEFAULT_SCENARIO = "mixed"  # import and export
DEFAULT_CALENDAR = "examples/tariffs/night-2rate.calendar.json"
DEFAULT_PRICES = "examples/tariffs/night-2rate.prices.json"
DEMAND_PERIOD_S = 900  # the demand period the simulated meter is given (and the truth uses)
J_PER_WH = 3600
DAY_S = 86400


class CheckError(Exception):
    """The check cannot be made (bad input, no boundary in the run ...): exit status 2."""


# --- local time from the calendar's POSIX TZ, through zoneinfo --------------------------------------------------


def posix_zone(tz: str) -> _dt.tzinfo:
    """A zoneinfo time zone that follows the POSIX TZ rule `tz` at every instant.

    A TZif file (RFC 8536, version 2) with no transitions and one placeholder local time type, whose footer is the
    TZ string: for instants after the last transition (all of them here), zoneinfo applies the footer's rule with
    its own parser."""
    if not isinstance(tz, str) or not tz or "\n" in tz or tz.startswith(":"):
        raise CheckError(f"calendar tz: not a POSIX TZ string: {tz!r}")
    header = b"TZif2" + bytes(15) + struct.pack(">6l", 0, 0, 0, 0, 1, 1)  # isut isstd leap time type char
    body = struct.pack(">lBB", 0, 0, 0) + b"\0"  # one ttinfo (UTC, designation "") and its 1-byte string table
    data = header + body + header + body + b"\n" + tz.encode("ascii") + b"\n"
    try:
        return ZoneInfo.from_file(io.BytesIO(data), key=tz)
    except ValueError as e:
        raise CheckError(f"calendar tz {tz!r}: zoneinfo cannot read it ({e})") from None


def _naive_local(t: int, zone: _dt.tzinfo) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def wall_instant(zone: _dt.tzinfo, wall: _dt.datetime) -> int:
    """The first UTC instant (whole seconds) at which the local clock reads `wall` (naive) or later.

    An ambiguous wall time (the repeated hour) gives its first occurrence; a wall time that does not exist (the
    hour skipped in spring) gives the instant of the jump, the first at which the clock reads later."""
    a = int(wall.replace(fold=0, tzinfo=zone).timestamp())
    b = int(wall.replace(fold=1, tzinfo=zone).timestamp())
    lo, hi = min(a, b), max(a, b)
    if _naive_local(lo, zone) >= wall:
        return lo  # wall exists; of two occurrences (fall back) lo is the first
    # A gap: the local clock jumps from below `wall` (at lo) to above it (at hi); find the jump.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _naive_local(mid, zone) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


# --- the calendar, resolved independently of meter.tou -------------------------------------------------------------


class TruthCalendar:
    """A TOU calendar dict (docs/tariffs.md) resolved with datetime and zoneinfo: which tariff when.

    Only what the ground truth needs; the meter itself validates calendars. The activity-calendar form
    {"active": cal, "passive": cal, "activation": t} is followed too (the passive calendar from t on)."""

    def __init__(self, d: dict):
        if not isinstance(d, dict):
            raise CheckError("calendar: must be a JSON object")
        if "active" in d:
            self.parts = [(None, _OneCalendar(d["active"]))]
            if d.get("passive") is not None:
                self.parts.append((int(d["activation"]), _OneCalendar(d["passive"])))
        else:
            self.parts = [(None, _OneCalendar(d))]
        self.name = self.parts[0][1].name

    def zone_at(self, t: int) -> _dt.tzinfo:
        return self._at(t).zone

    def _at(self, t: int) -> _OneCalendar:
        cal = self.parts[0][1]
        for since, c in self.parts[1:]:
            if since is not None and t >= since:
                cal = c
        return cal

    def intervals(self, t0: int, t1: int) -> list[tuple[int, int, int]]:
        """[(a, b, tariff)]: the tariff in force over [a, b), covering [t0, t1) without gaps; neighbours with the
        same tariff are merged."""
        out: list[tuple[int, int, int]] = []
        cuts = [t0] + [s for s, _ in self.parts[1:] if s is not None and t0 < s < t1] + [t1]
        for a, b in zip(cuts, cuts[1:], strict=False):
            for x, y, tariff in self._at(a).intervals(a, b):
                if out and out[-1][2] == tariff and out[-1][1] == x:
                    out[-1] = (out[-1][0], y, tariff)
                else:
                    out.append((x, y, tariff))
        return out

    def tariffs_used(self) -> set[int]:
        return {t for _, c in self.parts for prof in c.days.values() for _, t in prof}

    def tariff_registers(self) -> int:
        """How many tariff registers the meter needs: the calendars' declared 'tariffs', else the highest used."""
        return max([c.tariffs for _, c in self.parts if c.tariffs] + [max(self.tariffs_used())])


class _OneCalendar:
    def __init__(self, d: dict):
        try:
            self.name = d.get("name", "")
            self.tariffs = int(d.get("tariffs", 0))
            self.zone = posix_zone(d["tz"])
            self.seasons = sorted(((int(s["start"][0]), int(s["start"][1])), s["week"]) for s in d["seasons"])
            self.weeks = {k: list(v) for k, v in d["weeks"].items()}
            self.days = {k: [(int(m), int(t)) for m, t in v] for k, v in d["days"].items()}
            self.special_dated: dict[_dt.date, str] = {}
            self.special_yearly: dict[tuple[int, int], str] = {}
            for s in d.get("special", []):
                date = [int(x) for x in s["date"]]
                if len(date) == 3:
                    self.special_dated[_dt.date(*date)] = s["day"]
                else:
                    self.special_yearly[(date[0], date[1])] = s["day"]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CheckError(f"calendar: cannot read it ({type(e).__name__}: {e})") from None

    def profile(self, day: _dt.date) -> list[tuple[int, int]]:
        """The day profile [(minute, tariff)] in force on a local date."""
        name = self.special_dated.get(day) or self.special_yearly.get((day.month, day.day))
        if name is None:
            week = self.seasons[-1][1]  # before the first start of the year: last year's last season
            for start, w in self.seasons:
                if start <= (day.month, day.day):
                    week = w
            name = self.weeks[week][day.weekday()]  # Monday first, as datetime counts
        return self.days[name]

    def intervals(self, t0: int, t1: int) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        day = _naive_local(t0, self.zone).date()
        while True:
            prof = self.profile(day)
            midnight = _dt.datetime.combine(day, _dt.time())
            nxt = wall_instant(self.zone, midnight + _dt.timedelta(days=1))
            for i, (minute, tariff) in enumerate(prof):
                a = wall_instant(self.zone, midnight + _dt.timedelta(minutes=minute))
                b = wall_instant(self.zone, midnight + _dt.timedelta(minutes=prof[i + 1][0])) \
                    if i + 1 < len(prof) else nxt
                a, b = max(a, t0), min(b, t1)
                if a < b:
                    if out and out[-1][2] == tariff and out[-1][1] == a:
                        out[-1] = (out[-1][0], b, tariff)
                    else:
                        out.append((a, b, tariff))
            if nxt >= t1:
                return out
            day += _dt.timedelta(days=1)


def billing_boundaries(cal: TruthCalendar, t0: int, t1: int, billing_day: int) -> list[int]:
    """Local midnights on the billing day of each month (the calendar's zone at that time) in (t0, t1]."""
    out = []
    d = _naive_local(t0, cal.zone_at(t0)).date().replace(day=1)
    while True:
        wall = _dt.datetime(d.year, d.month, billing_day)
        t = wall_instant(cal.zone_at(_as_utc(wall)), wall)
        if t > t1:
            return out
        if t > t0:
            out.append(t)
        d = (d + _dt.timedelta(days=32)).replace(day=1)


def parse_start(text: str, cal: TruthCalendar) -> int:
    """'2026-10-05' or '2026-10-05T06:00' in the calendar's local time; with 'Z' or an offset, that instant."""
    try:
        dt = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CheckError(f"--start: not an ISO date or date-time: {text!r}") from None
    if dt.tzinfo is not None:
        return int(dt.timestamp())
    return wall_instant(cal.zone_at(_as_utc(dt)), dt)


def _as_utc(wall: _dt.datetime) -> int:
    """A naive wall time read as UTC: near enough to pick the calendar (of an activity calendar) in force."""
    return int(wall.replace(tzinfo=_dt.timezone.utc).timestamp())


def local_text(t: int, cal: TruthCalendar) -> str:
    return _dt.datetime.fromtimestamp(t, cal.zone_at(t)).strftime("%Y-%m-%d %H:%M %Z")


# --- the ground truth ------------------------------------------------------------------------------------------


def load_scenarios() -> Any:
    """firmware/sim/scenarios.py, the simulator's own load definitions, as a module (it needs only `math`)."""
    from meterkit.device.toolchain import firmware_dir

    path = firmware_dir() / "sim" / "scenarios.py"
    spec = importlib.util.spec_from_file_location("meterkit_billcheck_scenarios", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_scenario(name: str, seed: int, start: int) -> Any:
    """The very scenario sim.hardware.open_sim builds for a run that starts at UTC second `start`."""
    return load_scenarios().make(name, seed=seed, tod_s=start % DAY_S)


@dataclass
class Truth:
    start: int
    end: int
    import_j: dict[int, float]  # tariff -> exact import joules over [start, end]
    export_j: dict[int, float]
    demand_w: dict[int, float]  # 0 (overall) or tariff -> the largest 15-minute average import power, W
    demand_at: dict[int, int]  # ... and the end of that period (UTC s)
    intervals: list[tuple[int, int, int]] = field(default_factory=list)

    def wh(self, direction: int, tariff: int) -> float:
        per = self.import_j if direction == 1 else self.export_j
        return per.get(tariff, 0.0) / J_PER_WH


def ground_truth(scenario: Any, sim_start: int, end: int, cal: TruthCalendar,
                 period_s: int = DEMAND_PERIOD_S) -> Truth:
    """Energy per tariff and maximum demand over [sim_start, end] from the scenario's exact integrals."""
    ivs = cal.intervals(sim_start, end)
    imp: dict[int, float] = {}
    exp: dict[int, float] = {}
    for a, b, tariff in ivs:
        i, e = scenario.energy(a - sim_start, b - sim_start)
        imp[tariff] = imp.get(tariff, 0.0) + i
        exp[tariff] = exp.get(tariff, 0.0) + e
    best_w: dict[int, float] = {}
    best_at: dict[int, int] = {}
    k = 0
    b = (sim_start // period_s + 1) * period_s
    while b <= end:
        a = max(b - period_s, sim_start)
        w = scenario.energy(a - sim_start, b - sim_start)[0] / period_s
        while not ivs[k][0] <= b - 1 < ivs[k][1]:  # the tariff of the period's last second
            k += 1
        for key in (0, ivs[k][2]):
            if w > best_w.get(key, -1.0):  # strictly larger: among equal periods the earliest stays
                best_w[key] = w
                best_at[key] = b
        b += period_s
    return Truth(sim_start, end, imp, exp, best_w, best_at, ivs)


# --- prices and money, read and computed here ------------------------------------------------------------------


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def truth_money(prices: dict, energy_wh: dict[str, int], demand_w: dict[str, int]) -> tuple[list[dict], Decimal,
                                                                                             Decimal]:
    """Lines [{register, quantity, unit_price, amount}], exact total and the total rounded half away from zero.

    energy_wh: {"1.8.t"/"2.8.t": Wh}; demand_w: {"1.6.x": W}. Quantities in kWh / kW are exact decimals: every
    operation runs with 80 digits and any rounding raises (decimal.Inexact), except the final rounding."""
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        ctx.traps[decimal.Inexact] = True
        return _truth_money(prices, energy_wh, demand_w)


def _truth_money(prices: dict, energy_wh: dict[str, int], demand_w: dict[str, int]) -> tuple[list[dict], Decimal,
                                                                                              Decimal]:
    lines = []
    for reg, wh in energy_wh.items():
        c, _, t = reg.split(".")
        entry = prices["tariffs"].get(t, {})
        price = entry.get("import") if c == "1" else entry.get("export")
        if price is None:
            continue
        unit = _dec(price) if c == "1" else -_dec(price)  # an export credit is subtracted
        q = Decimal(wh) / 1000
        lines.append({"register": reg, "quantity": q, "unit_price": unit, "amount": q * unit})
    for reg, price in (prices.get("demand") or {}).items():
        if reg in demand_w:
            q = Decimal(demand_w[reg]) / 1000
            lines.append({"register": reg, "quantity": q, "unit_price": _dec(price), "amount": q * _dec(price)})
    if prices.get("fixed"):
        lines.append({"register": "fixed", "quantity": Decimal(1), "unit_price": _dec(prices["fixed"]),
                      "amount": _dec(prices["fixed"])})
    exact = sum((ln["amount"] for ln in lines), Decimal(0))
    minor = int(prices.get("minor_unit", 2))
    ctx = decimal.getcontext().copy()
    ctx.traps[decimal.Inexact] = False
    return lines, exact, exact.quantize(Decimal(1).scaleb(-minor), rounding=ROUND_HALF_UP, context=ctx)


# --- the meter's side: simulate, store through a concentrator ----------------------------------------------------


@dataclass
class Run:
    """One simulated meter and its stored frames."""

    scenario: str
    seed: int
    start: int
    end: int
    days: float
    billing_day: int
    boundary: int  # the one billing boundary inside the run (computed here)
    period: str  # the billing period it closes, as `meterkit bill --period` names it
    calendar_path: Path
    prices_path: Path
    db: Path
    meter_name: str
    device: bytes
    sim: dict  # run_sim's result
    frames_sent: int
    snapshots_sent: list[int]  # sequence numbers of the billing frames in the meter's frame stream
    ingest_s: float


def _kinds(stream: bytes) -> list[tuple[int, int]]:
    """(kind, seq) of every frame in a COBS stream, unverified (the concentrator verifies)."""
    import cbor2

    from meter import cose as mcose
    from meter import messages as mmsg
    from meter.frame import Deframer

    out = []
    for msg in Deframer().feed(stream):
        p = cbor2.loads(mcose.split(msg)[2])
        out.append((p[mmsg.K_KIND], p[mmsg.K_SEQ]))
    return out


def store_frames(db: Path, stream: bytes, public_key: bytes, name: str, now: int) -> int:
    """Feed a meter's frame stream to a real Concentrator (TCP on 127.0.0.1, SQLite file), the way it arrives
    from the field, and wait for the acknowledgement of the last frame; returns the number of frames."""
    from meter.frame import Deframer
    from meterkit import wire as P
    from meterkit.testing.rig import LoopbackRig, ManualClock
    n = len(Deframer().feed(stream))
    if n == 0:
        raise CheckError("the meter sent no frames")
    last_seq = max(seq for _, seq in _kinds(stream))

    class _Peer:  # what MeterClient needs of a meter: whose acknowledgements to accept
        device_id = P.key_id(public_key)

    async def main() -> None:
        async with LoopbackRig(db, clock=ManualClock(now)) as rig:
            rig.store.register_meter(None, public_key, name, 900)
            cl = await rig.connect(_Peer())  # type: ignore[arg-type]
            cl.send(stream)
            await cl.wait_ack(last_seq, timeout=max(120.0, n / 50))
            cl.close()
            if cl.refused:
                raise CheckError(f"the head-end's acknowledgements were refused: {cl.refused[:3]}")

    asyncio.run(main())
    return n


def simulate(days: float = DEFAULT_DAYS, start: str | int = DEFAULT_START, calendar: str | Path = DEFAULT_CALENDAR,
             prices: str | Path = DEFAULT_PRICES, scenario: str = DEFAULT_SCENARIO, seed: int = 1,
             billing_day: int = 1, reading_s: int = 900, db: str | Path | None = None,
             meter_name: str = "billcheck", progress: Callable[[float], None] | None = None,
             say: Callable[[str], None] = lambda m: None) -> Run:
    """Run the meter for `days` and store its frames in `db` (default: a file in a temporary directory that is
    kept for the caller; remove it when done)."""
    from meterkit.device.toolchain import repo_root
    from meterkit.sim.runner import SimError, run_sim

    cal_path, prices_path = (_path(calendar, repo_root()), _path(prices, repo_root()))
    cal = TruthCalendar(_read_json(cal_path, "calendar"))
    _read_json(prices_path, "prices")
    if not 1 <= billing_day <= 28:
        raise CheckError(f"--billing-day must be 1..28, not {billing_day}")
    if not days > 0:
        raise CheckError(f"--days must be positive, not {days}")
    t0 = start if isinstance(start, int) else parse_start(start, cal)
    t1 = t0 + round(days * DAY_S)
    bounds = billing_boundaries(cal, t0, t1, billing_day)
    if len(bounds) != 1 or bounds[0] >= t1:
        where = ", ".join(local_text(b, cal) for b in bounds) or "none"
        raise CheckError(f"the run {local_text(t0, cal)} .. {local_text(t1, cal)} must contain exactly one billing "
                         f"boundary (billing day {billing_day}) strictly before its end; it contains: {where}")
    bd = _naive_local(bounds[0], cal.zone_at(bounds[0])).date()
    y, m = (bd.year, bd.month - 1) if bd.month > 1 else (bd.year - 1, 12)
    if db is None:
        db = Path(tempfile.mkdtemp(prefix="meterkit-billcheck-")) / "headend.db"
    db = Path(db)
    if db.exists():
        raise CheckError(f"{db} exists: billcheck makes a new head-end database")
    with tempfile.TemporaryDirectory(prefix="meterkit-billcheck-") as tmp:
        frames_path = Path(tmp) / "meter.frames"
        say(f"simulating {days:g} days of {scenario!r} from {local_text(t0, cal)} (one billing boundary: "
            f"{local_text(bounds[0], cal)})")
        try:
            result = run_sim(scenario, days * 24, seed=seed, start=t0, frames_out=frames_path, reading_s=reading_s,
                             calendar=cal_path, billing_day=billing_day, tariffs=cal.tariff_registers(),
                             demand_period_s=DEMAND_PERIOD_S, progress=progress,
                             timeout=max(900.0, days * 300))  # ~35 s of CPU per day; slack for a busy machine
        except SimError as e:
            raise CheckError(f"the simulation failed: {e}") from None
        stream = frames_path.read_bytes()
    kinds = _kinds(stream)

    say(f"storing {len(kinds)} signed frames through a concentrator into {db}")
    w0 = time.monotonic()
    pub = bytes.fromhex(result["public_key"])
    store_frames(db, stream, pub, meter_name, t1)
    return Run(scenario, seed, t0, t1, days, billing_day, bounds[0], f"{y:04d}-{m:02d}", cal_path, prices_path, db,
               meter_name, bytes.fromhex(result["device_id"]), result, len(kinds),
               [seq for kind, seq in kinds if kind == BILLING], round(time.monotonic() - w0, 3))


def _path(p: str | Path, root: Path) -> Path:
    p = Path(p)
    if not p.exists() and not p.is_absolute() and (root / p).exists():
        return root / p  # the defaults are checkout paths: they work from any working directory
    return p


def _read_json(path: Path, what: str, **kw: Any) -> Any:
    try:
        return json.loads(Path(path).read_text(), **kw)
    except OSError as e:
        raise CheckError(f"{what} {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CheckError(f"{what} {path}: not valid JSON ({e})") from None


# --- the comparison --------------------------------------------------------------------------------------------


def check(run: Run, truth_calendar: dict | None = None) -> dict:
    """Bill the stored period with meterkit.billing.bill, compute the truth, compare. Returns the report (JSON-able).

    truth_calendar: the calendar the truth uses (default: the one the meter ran with); a test hands in a
    different one to see the check fail."""
    from meterkit import billing as B
    from meterkit.store import open_store

    cal_dict = truth_calendar if truth_calendar is not None else _read_json(run.calendar_path, "calendar")
    cal = TruthCalendar(cal_dict)
    prices = _read_json(run.prices_path, "prices", parse_float=Decimal)
    with open_store(run.db, create=False, readonly=True) as st:
        stored = st.billing_snapshots(run.device)
        try:
            bill = B.bill(st, run.meter_name, run.period, run.prices_path, run.calendar_path,
                          billing_day=run.billing_day)
        except (B.BillingError, ValueError) as e:
            raise CheckError(f"meterkit bill refused the period {run.period}: {e}") from None
    truth = ground_truth(make_scenario(run.scenario, run.seed, run.start), run.start, run.boundary, cal)
    regs = _registers_vs_truth(bill, truth)
    demand = _demand_vs_truth(bill, truth)
    money, t_exact, t_total = _money_vs_truth(bill, prices, regs, demand)
    ok = all(r["ok"] for r in regs) and all(d["ok"] for d in demand)

    sent = len(run.snapshots_sent)
    period_end_ok = len(stored) == 1 and stored[0].period_end == run.boundary
    ok &= sent == 1 and len(stored) == 1 and period_end_ok
    whole_imp, whole_exp = make_scenario(run.scenario, run.seed, run.start).energy(0, run.end - run.start)
    s = run.sim
    return {
        "ok": bool(ok),
        "rule": ("exactly one billing snapshot sent and stored, its period end the boundary computed here; "
                 "every tariff register |register - floor(truth Wh)| <= 1; each total within 1 Wh of the sum of "
                 "the tariffs' floor(truth Wh); each maximum demand |W - floor(truth W)| <= 1"),
        "scenario": run.scenario, "seed": run.seed, "days": run.days, "billing_day": run.billing_day,
        "calendar": str(run.calendar_path), "prices": str(run.prices_path), "db": str(run.db),
        "meter": run.meter_name, "device": run.device.hex(),
        "start_utc": run.start, "end_utc": run.end, "boundary_utc": run.boundary,
        "start_local": local_text(run.start, cal), "boundary_local": local_text(run.boundary, cal),
        "period": run.period, "bill_start_utc": bill.start, "bill_end_utc": bill.end,
        "energy_source": bill.sources.get("energy"), "demand_source": bill.sources.get("demand"),
        "snapshots_sent": sent, "snapshots_stored": len(stored),
        "snapshot_period_end_utc": [b.period_end for b in stored], "snapshot_period_end_ok": period_end_ok,
        "snapshot_seq": [b.seq for b in stored],
        "registers": regs, "demand": demand, "money": money,
        "currency": bill.currency,
        "meter_total_exact": str(bill.total_exact), "meter_total": str(bill.total),
        "truth_total_exact": str(t_exact), "truth_total": str(t_total),
        "total_diff": plain_number(bill.total - t_total),
        "whole_run": {  # where a difference comes from: the scenario's integral, what the chip converted, metered
            "scenario_import_wh": round(whole_imp / J_PER_WH, 6), "scenario_export_wh": round(whole_exp / J_PER_WH, 6),
            "chip_import_wh": round(s["exact_import_uwh"] / 1e6, 6),
            "chip_export_wh": round(s["exact_export_uwh"] / 1e6, 6),
            "meter_import_wh": round(s["metered_import_uwh"] / 1e6, 6),
            "meter_export_wh": round(s["metered_export_uwh"] / 1e6, 6),
        },
        "frames_sent": run.frames_sent, "sim_wall_s": s.get("wall_s"), "ingest_wall_s": run.ingest_s,
        "tariff_intervals": len(truth.intervals), "notes": bill.notes,
    }


def _registers_vs_truth(bill: Any, truth: Truth) -> list[dict]:
    """Every energy register of the bill against floor(truth Wh): tariffs within 1 Wh, totals within 1 Wh of the
    sum of the tariffs' floors."""
    regs: list[dict] = []
    tariffs = sorted({int(d.register.split(".")[2]) for d in bill.determinants
                      if d.register[:4] in ("1.8.", "2.8.") and d.tariff is not None}
                     | {t for t in truth.import_j} | {t for t in truth.export_j})
    for c in (1, 2):
        floors = {t: math.floor(truth.wh(c, t)) for t in tariffs}
        for t in [0] + tariffs:
            reg = f"{c}.8.{t}"
            d = bill.determinant(reg)
            meter = None if d is None or d.end_value is None else d.end_value - (d.start_value or 0)
            if t == 0:
                exact = sum(truth.wh(c, x) for x in tariffs)
                ref = sum(floors.values())
            else:
                exact = truth.wh(c, t)
                ref = floors[t]
            good = meter is not None and abs(meter - ref) <= 1
            regs.append({"register": reg, "description": d.description if d else reg, "meter_wh": meter,
                         "truth_wh": round(exact, 6), "truth_floor_wh": ref,
                         "diff_wh": None if meter is None else meter - ref, "ok": good})
    return regs


def _demand_vs_truth(bill: Any, truth: Truth) -> list[dict]:
    """Each maximum demand of the bill against floor(truth W), within 1 W."""
    demand: list[dict] = []
    for key in sorted(truth.demand_w):
        reg = f"1.6.{key}"
        d = bill.determinant(reg)
        meter_w = None if d is None else int(d.quantity * 1000)
        ref = math.floor(truth.demand_w[key])
        good = meter_w is not None and abs(meter_w - ref) <= 1
        demand.append({"register": reg, "meter_w": meter_w, "meter_at": None if d is None else d.at,
                       "truth_w": round(truth.demand_w[key], 6), "truth_floor_w": ref,
                       "truth_at": truth.demand_at[key], "diff_w": None if meter_w is None else meter_w - ref,
                       "ok": good})

    return demand


def _money_vs_truth(bill: Any, prices: dict, regs: list[dict], demand: list[dict]) -> tuple[list[dict], Decimal,
                                                                                            Decimal]:
    """The bill's lines against the truth's, priced independently from the same price file."""
    energy_wh = {r["register"]: r["truth_floor_wh"] for r in regs if not r["register"].endswith(".0")}
    t_lines, t_exact, t_total = truth_money(prices, energy_wh, {r["register"]: r["truth_floor_w"] for r in demand})
    by_reg = {ln["register"]: ln for ln in t_lines}
    money = []
    for ln in bill.lines:
        key = ln.register or "fixed"
        tl = by_reg.pop(key, None)
        money.append({"register": key, "description": ln.description, "meter_amount": str(ln.amount),
                      "truth_amount": None if tl is None else str(tl["amount"]),
                      "diff": None if tl is None else plain_number(ln.amount - tl["amount"])})
    for key, tl in by_reg.items():
        money.append({"register": key, "description": "(truth only)", "meter_amount": None,
                      "truth_amount": str(tl["amount"]), "diff": None})

    return money, t_exact, t_total


def format_report(r: dict) -> str:
    out = [f"billcheck: {r['days']:g} days of {r['scenario']!r} (seed {r['seed']}) from {r['start_local']}, "
           f"billing day {r['billing_day']}",
           f"  calendar {r['calendar']}, prices {r['prices']}",
           f"  head-end database {r['db']}: meter {r['device']} ({r['meter']}), {r['frames_sent']} signed frames",
           f"  billing snapshots: {r['snapshots_sent']} sent, {r['snapshots_stored']} stored (must be 1); period end "
           + ", ".join(utc_text(t) for t in r["snapshot_period_end_utc"])
           + f" (boundary computed here: {r['boundary_local']} = {utc_text(r['boundary_utc'])})",
           f"  bill {r['period']}: {utc_text(r['bill_start_utc'])} .. {utc_text(r['bill_end_utc'])}; energy from "
           f"{r['energy_source']}", "",
           f"  {'register':<8} {'':<30} {'meter Wh':>11} {'truth Wh (exact)':>18} {'floor(truth)':>13} "
           f"{'diff':>5}"]
    for x in r["registers"]:
        meter = "-" if x["meter_wh"] is None else str(x["meter_wh"])
        diff = "-" if x["diff_wh"] is None else f"{x['diff_wh']:+d}"
        label = x["description"] + (" *" if x["register"].endswith(".0") else "")
        out.append(f"  {x['register']:<8} {label[:30]:<30} {meter:>11} {x['truth_wh']:>18.3f} "
                   f"{x['truth_floor_wh']:>13} {diff:>5}  {'ok' if x['ok'] else 'DIFFERS'}")
    out.append("  * totals: floor(truth) is the sum of the tariffs' floors, as the meter's totals are the sums of its "
               "tariff registers")
    out += ["", f"  {'register':<8} {'maximum demand':<30} {'meter W':>11} {'truth W (exact)':>18} "
                f"{'floor(truth)':>13} {'diff':>5}"]
    for x in r["demand"]:
        meter = "-" if x["meter_w"] is None else str(x["meter_w"])
        diff = "-" if x["diff_w"] is None else f"{x['diff_w']:+d}"
        at = "" if x["meter_at"] is None else f" at {utc_text(x['meter_at'])}"
        at += f" (truth {utc_text(x['truth_at'])})"
        out.append(f"  {x['register']:<8} {'':<30} {meter:>11} {x['truth_w']:>18.3f} {x['truth_floor_w']:>13} "
                   f"{diff:>5}  {'ok' if x['ok'] else 'DIFFERS'}{at}")
    out += ["", f"  {'line':<40} {'meter ' + r['currency']:>16} {'truth ' + r['currency']:>16} {'diff':>12}"]
    for x in r["money"]:
        out.append(f"  {(x['register'] + ' ' + x['description'])[:40]:<40} {x['meter_amount'] or '-':>16} "
                   f"{x['truth_amount'] or '-':>16} {x['diff'] or '-':>12}")
    out.append(f"  {'total, exact':<40} {r['meter_total_exact']:>16} {r['truth_total_exact']:>16}")
    out.append(f"  {'TOTAL (rounded, half away from zero)':<40} {r['meter_total']:>16} {r['truth_total']:>16} "
               f"{r['total_diff']:>12}")
    w = r["whole_run"]
    out += ["", "  whole run (to the end of the simulation), Wh:   scenario integral   chip converted   meter",
            f"    import {w['scenario_import_wh']:>40.3f} {w['chip_import_wh']:>16.3f} {w['meter_import_wh']:>8.3f}",
            f"    export {w['scenario_export_wh']:>40.3f} {w['chip_export_wh']:>16.3f} {w['meter_export_wh']:>8.3f}",
            f"  simulation {r['sim_wall_s']} s wall, ingest {r['ingest_wall_s']} s"]
    for n in r["notes"]:
        out.append(f"  note: {n}")
    out += ["", f"  rule: {r['rule']}", f"  RESULT: {'PASS' if r['ok'] else 'FAIL'}"]
    return "\n".join(out)


# --- the command -------------------------------------------------------------------------------------------------
