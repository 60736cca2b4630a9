"""`make demo`: a fleet of simulated meters reporting to a concentrator, 24 virtual hours in a few minutes.

Six meters (the real firmware under the MicroPython Unix port, each with its own simulated INA219 and load),
half over serial (ptys), half over TCP with TLS (the head-end's CA pinned; --no-tls: in clear), report to a
concentrator with SQLite. Every meter runs the two-rate night
tariff (examples/tariffs/night-2rate, Central European time), and the run crosses the end of the October billing
period (2026-11-01 00:00 CET), so each meter sends a signed billing snapshot. Meter 2's serial cable is pulled for
four hours; meter 5 loses power for two. A firmware update is rolled out in waves (demo_firmware). At the end: a
summary table, the database, a plot of the load profiles, one meter's bill for October with its billing
determinants as CSV, a plot of one local day coloured by tariff, and the commands to look further.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
from collections.abc import Iterator
from pathlib import Path

from meter import cose, frame
from meter import messages as M
from meterkit.device.toolchain import repo_root
from meterkit.headend.alertview import alert_rows, format_alerts
from meterkit.sim import demo_control, demo_firmware
from meterkit.sim.fleet import Fleet, MeterSpec
from meterkit.sim.runner import progress_bar
from meterkit.store import open_store
from meterkit.store.api import Store

TARIFF_DIR = repo_root() / "examples" / "tariffs"
CALENDAR = TARIFF_DIR / "night-2rate.calendar.json"  # night 22:00-06:00, day 06:00-22:00, CET/CEST
PRICES = TARIFF_DIR / "night-2rate.prices.json"
DEMO_FLEET = [
    MeterSpec("meter-1", "solar-day", "serial", seed=1, calendar=CALENDAR),
    MeterSpec("meter-2", "constant", "serial", seed=2, calendar=CALENDAR),
    MeterSpec("meter-3", "random-walk", "serial", seed=3, calendar=CALENDAR),
    MeterSpec("meter-4", "steps", "tcp", seed=4, calendar=CALENDAR),
    # An ESP32 without a backed-up RTC: its clock starts at 2000-01-01 at every power-up, and the head-end sets it.
    MeterSpec("meter-5", "export", "tcp", seed=5, calendar=CALENDAR, rtc="unset"),
    MeterSpec("meter-6", "mixed", "tcp", seed=6, calendar=CALENDAR),
]
# The end of the October billing period (billing day 1): 2026-11-01 00:00 CET = 2026-10-31 23:00 UTC. A 24-hour
# demo starts 11 hours before it, at 2026-10-31 12:00 UTC (13:00 CET), and ends 2026-11-01 12:00 UTC.
BILLING_END = 1793487600
BEFORE_END = 11 / 24  # the share of the run before the billing period ends
LINK_CUT = ("meter-2", 6.0, 10.0)  # serial cable pulled from hour 6 to hour 10 (18:00-22:00 UTC on a 24 h run)
POWER_CUT = ("meter-5", 14.0, 16.0)  # meter without power from hour 14 to 16 (02:00-04:00 UTC on Nov 1)
# The bill: meter-6 (a battery, charged and discharged in turn) imports and exports in both tariffs; meter-1's
# solar panel is dark all night, so its bill and day plot would show one tariff only.
BILL_METER = "meter-6"
BILL_PERIOD = "2026-10"  # opened by the meter's commissioning hello, closed by its snapshot at 2026-11-01 00:00 CET
PLOT_DAY = "2026-10-31"  # the local day whose last hours are the billed ones (13:00-24:00 CET on a 24 h run)


def demo_start(hours: float) -> int:
    """The fleet's start (UTC): BEFORE_END of the run before the billing period ends (on a whole minute), so
    every run, also a short `--hours`, crosses the billing boundary."""
    return BILLING_END - int(hours * 3600 * BEFORE_END) // 60 * 60


def _headend_key(out: Path):
    """The demo's head-end key pair, kept in out/keys (made once, like `meterkit keys new`)."""
    from meterkit.wire import keys

    kdir = out / "keys"
    if not (kdir / "headend.key.pem").exists():
        keys.new_key(kdir)
    return keys.load_private(kdir / "headend.key.pem")


def _frames_produced(path: Path) -> set[int]:
    import cbor2

    seqs = set()
    if path.exists():
        for msg in frame.Deframer().feed(path.read_bytes()):
            seqs.add(cbor2.loads(cose.split(msg)[2])[M.K_SEQ])
    return seqs


def _stored(fleet: Fleet) -> Store:
    """The fleet's database, read-only (the concentrator may still hold it open)."""
    return open_store(fleet.db_path, create=False, readonly=True)


def summary(fleet: Fleet) -> tuple[str, list[dict]]:
    rows = []
    with _stored(fleet) as db:
        status = {f.meter.device_id: f for f in db.fleet()}
        for m in fleet.meters:
            stored = set(db.seqs_above(m.device, -1))
            # A verified frame was made by the meter even when its line in the frames log was still in the
            # killed process's buffer at a power cut.
            produced = _frames_produced(m.frames_log) | stored
            st = status.get(m.device)
            imp, exp, backfilled = (st.import_wh, st.export_wh, st.gaps_backfilled) if st else (None, None, 0)
            snapshots = sum(b.period_end == BILLING_END for b in db.billing_snapshots(m.device))
            rows.append({
                "meter": m.spec.name, "link": m.spec.link, "scenario": m.spec.scenario,
                "import_kwh": (imp or 0) / 1000, "export_kwh": (exp or 0) / 1000,
                "produced": len(produced), "stored": len(stored), "missing": len(produced - stored),
                "backfilled": backfilled, "outages": len(db.outages(m.device)),
                "snapshots": snapshots, "link_cuts": m.link_cuts, "power_cuts": m.power_cuts,
            })
    head = ("meter", "link", "scenario", "import kWh", "export kWh", "frames made", "stored", "missing",
            "back-filled", "outages", "snapshots")
    body = [(r["meter"], r["link"], r["scenario"], f"{r['import_kwh']:.3f}", f"{r['export_kwh']:.3f}",
             str(r["produced"]), str(r["stored"]), str(r["missing"]), str(r["backfilled"]), str(r["outages"]),
             str(r["snapshots"]))
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [head, *body]]
    return "\n".join(lines), rows


def plot(fleet: Fleet, path: Path) -> None:
    """Average power per 15-minute interval for every meter, from the stored load-profile rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boundary = (BILLING_END - fleet.start_unix) / 3600
    with _stored(fleet) as db:
        profiles = [[(r.end, r.import_mwh, r.export_mwh, r.period_s) for r in db.interval_rows(m.device)]
                    for m in fleet.meters]
    fig, axes = plt.subplots(len(fleet.meters), 1, figsize=(10, 1.7 * len(fleet.meters)), sharex=True)
    for ax, m, rows in zip(axes, fleet.meters, profiles, strict=True):
        xs, ys = [], []
        for (t0, i0, e0, _), (t1, i1, e1, p1) in zip(rows, rows[1:], strict=False):
            hours = (t1 - fleet.start_unix) / 3600
            xs.append(hours)
            if p1 and t1 - t0 > p1:  # rows missing (the meter was off): a gap in the line, not an average
                ys.append(float("nan"))
            else:
                ys.append(((i1 - i0) - (e1 - e0)) / ((t1 - t0) / 3600) / 1000)  # mWh per hour / 1000 = W
        ax.step(xs, ys, where="pre", lw=1.2, color="tab:blue")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(boundary, color="black", lw=0.8, ls="--")
        ax.set_ylabel("W", rotation=0, labelpad=12)
        ax.set_title(f"{m.spec.name} ({m.spec.scenario}, {m.spec.link})", fontsize=9, loc="left")
        for name, t_from, t_to, colour, label in (
                (LINK_CUT[0], LINK_CUT[1], LINK_CUT[2], "tab:orange", "link down"),
                (POWER_CUT[0], POWER_CUT[1], POWER_CUT[2], "tab:red", "power cut")):
            if m.spec.name == name:
                ax.axvspan(t_from, t_to, color=colour, alpha=0.2, label=label)
                ax.legend(loc="upper right", fontsize=8)
    start = _dt.datetime.fromtimestamp(fleet.start_unix, _dt.timezone.utc)
    step = 3 if fleet.hours >= 6 else 1
    ticks = [h for h in range(0, int(fleet.hours) + 1, step)]
    labels = []
    for h in ticks:
        t = start + _dt.timedelta(hours=h)
        labels.append(t.strftime("%H:%M\n%b %d") if h == 0 or (t.hour, t.minute) < (step, 0) else t.strftime("%H:%M"))
    axes[-1].set_xticks(ticks)
    axes[-1].set_xticklabels(labels)
    axes[-1].set_xlabel("UTC (dashed: the October billing period ends, 2026-11-01 00:00 CET = 2026-10-31 23:00 UTC)")
    axes[-1].set_xlim(0, fleet.hours)
    fig.suptitle("meterkit demo: load profiles (99.1.0, 15-minute rows) as stored by the concentrator")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def bill_and_day(db_path: Path, out: Path) -> tuple[str, list[tuple[str, str]], list[str]]:
    """BILL_METER's bill for BILL_PERIOD (Bill.format()), its determinants as CSV next to the database, and
    PLOT_DAY's load profile coloured by tariff as a PNG in `out`. Returns (the bill, or why there is none;
    [(what, file)] written; [why something was not made]). A BillingError is reported, never raised: the rest
    of the demo's results stand."""
    from meterkit import billing

    cal = billing.load_calendar(CALENDAR)
    prices = billing.load_prices(PRICES, cal)
    csv_path = db_path.parent / f"bill-{BILL_METER}-{BILL_PERIOD}.csv"
    png = out / f"tariff-day-{BILL_METER}-{PLOT_DAY}.png"
    files, failed = [], []
    with open_store(db_path, create=False, readonly=True) as store:
        try:
            b = billing.bill(store, BILL_METER, BILL_PERIOD, prices, cal)
        except billing.BillingError as e:
            text = f"NO BILL for {BILL_METER}, period {BILL_PERIOD}: {e}"
            failed.append(text)
        else:
            text = b.format()
            with open(csv_path, "w", newline="") as f:
                n = b.write_csv(f)
            files.append((f"billing determinants ({n})", str(csv_path)))
        try:
            n = billing.plot_day(store, BILL_METER, PLOT_DAY, cal, png, prices)
        except billing.BillingError as e:
            failed.append(f"NO PLOT of {PLOT_DAY} for {BILL_METER}: {e}")
        else:
            files.append((f"{BILL_METER} on {PLOT_DAY} by tariff", f"{png} ({n} intervals: the run's part of that "
                          "local day)"))
    return text, files, failed


class _LogLines(logging.Handler):
    """The concentrator's warnings (a meter offline, frames never made) and what it does about meters' clocks,
    kept with the fleet time they came at and printed with the fleet's events, not across the progress bar."""

    def __init__(self, fleet: Fleet):
        super().__init__(logging.INFO)
        self.fleet = fleet
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.WARNING or record.name.endswith(".clocks") or "(set-time," in text:
            self.lines.append((self.fleet.clock.hours(), text))

    def named(self) -> list[tuple[float, str]]:
        out = []
        for h, text in self.lines:
            for m in self.fleet.meters:
                if m.device:
                    text = text.replace(f"meter {m.device.hex()}", m.spec.name).replace(m.device.hex(), m.spec.name)
            out.append((h, f"concentrator: {text}"))
        return out


def _utc_log(line: str, start_unix: int) -> str:
    """A fleet log line ('  6.00 h  cut_link meter-2') with the UTC time of day added."""
    head, _, rest = line.strip().partition(" h ")
    try:
        t = _dt.datetime.fromtimestamp(start_unix + float(head) * 3600, _dt.timezone.utc)
    except ValueError:
        return line
    return f"{line[:len(line) - len(line.lstrip())]}{head} h ({t:%H:%M} UTC) {rest}"


def _intro(out: Path, hours: float, speed: float, start: int, tls: bool) -> None:
    t0 = _dt.datetime.fromtimestamp(start, _dt.timezone.utc)
    print(f"meterkit demo: {len(DEMO_FLEET)} simulated meters (the real firmware under the MicroPython Unix "
          f"port), {hours:g} h of virtual time at {speed:g}x from {t0:%Y-%m-%d %H:%M} UTC")
    print(f"  tariff: {CALENDAR.name} on every meter (night 22:00-06:00, day 06:00-22:00 CET); the October "
          "billing period ends at 2026-11-01 00:00 CET")
    print("  provisioning: each meter makes its key, the head-end key is installed, public keys registered"
          + (f"; the TCP meters pin the head-end's TLS CA ({out / 'tls'}: meterkit keys tls)" if tls else ""))
    print("  links: meters 1-3 over serial (ptys), 4-6 over TCP" + (" with TLS (mbedTLS on the meter, CERT_REQUIRED)"
                                                                    if tls else " in clear (--no-tls)"))


@contextlib.contextmanager
def _headend_log(fleet: Fleet) -> Iterator[_LogLines]:
    """The concentrator's log lines kept for the timeline, not printed across the progress bar."""
    clog = _LogLines(fleet)
    logger = logging.getLogger("meterkit.headend")
    logger.addHandler(clog)
    propagate, logger.propagate = logger.propagate, False
    level = logger.level
    logger.setLevel(logging.INFO)  # the clock lines are INFO
    try:
        yield clog
    finally:
        logger.removeHandler(clog)
        logger.propagate = propagate
        logger.setLevel(level)


def _timeline(fleet: Fleet, clog: _LogLines, start: int) -> None:
    events = [(h, line) for line in fleet.log if (h := _hours(line)) is not None]
    events += [(h, f"{h:5.2f} h  {text}") for h, text in clog.named()]
    for _, line in sorted(events, key=lambda e: e[0]):
        print("  " + _utc_log(line, start))
    for line in fleet.log:
        if _hours(line) is None:
            print("  " + line)


def _operations(fleet: Fleet, dr_event: int, fw_rollout) -> None:
    """What the operator did (two-way control, DR, the rollout) and the security monitor's verdict."""
    print("two-way control (signed commands through the queue, in the audit log; states as the meters reported them):")
    with _stored(fleet) as db:
        for line in demo_control.control_lines(db, fleet) + [""] + demo_control.dr_lines(db, dr_event, fleet.clock()):
            print(f"  {line}".rstrip())
        print()
        print("firmware update in waves (a canary, then the rest; docs/firmware-updates.md):")
        for line in demo_firmware.rollout_lines(db, fleet, fw_rollout):
            print(f"  {line}")
        print()
        print(alert_lines(db))


def _files_and_next(out: Path, files: list[tuple[str, str]], failed: list[str], dr_event: int) -> None:
    db = out / "meterkit.db"
    files = [("database", str(db)), ("load profiles, every meter", str(out / "load-profiles.png")), *files]
    width = max(len(k) for k, _ in files) + 1
    print("files:")
    for k, v in files:
        print(f"  {k + ':':<{width}} {v}")
    for f in failed:
        print(f"  {f}")
    print(f"look further: .venv/bin/meterkit status --db {db}")
    print(f"              .venv/bin/meterkit relay status {demo_control.CONTROL_METER} --db {db}")
    print(f"              .venv/bin/meterkit audit --db {db}")
    print(f"              .venv/bin/meterkit alerts --db {db} --state all")
    print(f"              .venv/bin/meterkit firmware status --db {db}")
    print(f"              .venv/bin/meterkit dr report {dr_event} --db {db}")
    print(f"              .venv/bin/meterkit export --db {db} --csv --table billing")
    print(f"              .venv/bin/meterkit bill --db {db} --meter meter-1 --period {BILL_PERIOD} --prices "
          f"{_rel(PRICES)} --calendar {_rel(CALENDAR)} --plot-day 2026-11-01 --png {out / 'meter-1.png'}")
    print("Home Assistant (docs/home-assistant.md): with an MQTT broker that Home Assistant uses (e.g. Mosquitto on "
          "localhost:1883),")
    print(f"              METERKIT_MQTT_PASSWORD=... .venv/bin/meterkit concentrator --db {db} --key "
          f"{out / 'keys' / 'headend.key.pem'} --listen 127.0.0.1:4840 --mqtt mqtt://meterkit@localhost:1883 "
          "--mqtt-meter all")
    print("              publishes these meters' stored totals with MQTT discovery: they appear under Settings > "
          "Devices > MQTT, and their Import (1.8.0) and Export (2.8.0) go into the Energy dashboard")


async def _run(out: Path, hours: float, speed: float, tls: bool = True) -> int:
    start = demo_start(hours)
    fleet = Fleet(out, demo_control.with_button(DEMO_FLEET, hours), _headend_key(out), out / "meterkit.db",
                  hours=hours, speed=speed, start_unix=start, tls=tls)
    scale = hours / 24.0
    fleet.at(LINK_CUT[1] * scale, "cut_link", LINK_CUT[0])
    fleet.at(LINK_CUT[2] * scale, "restore_link", LINK_CUT[0])
    fleet.at(POWER_CUT[1] * scale, "power_cut", POWER_CUT[0])
    fleet.at(POWER_CUT[2] * scale, "power_on", POWER_CUT[0])
    _intro(out, hours, speed, start, tls)
    with _headend_log(fleet) as clog:
        update = demo_firmware.prepare(fleet, out)
        await fleet.setup()
        try:
            operator = asyncio.ensure_future(demo_control.operate(fleet))
            rollout = asyncio.ensure_future(demo_firmware.roll_out(fleet, update))
            await fleet.run(progress_bar("  running "))
            dr_event = await operator
            fw_rollout = await rollout
            table, rows = summary(fleet)
            plot(fleet, out / "load-profiles.png")
        finally:
            await fleet.close()
    print()
    _timeline(fleet, clog, start)
    print()
    print(table)
    lost = sum(r["missing"] for r in rows)
    snapped = sum(r["snapshots"] == 1 for r in rows)
    print(f"\n{sum(r['stored'] for r in rows)} frames stored, {lost} of the frames the meters made missing.")
    print(f"{snapped} of {len(rows)} meters sent their billing snapshot for the period that ends 2026-11-01 00:00 CET "
          "(column 'snapshots').")
    print()
    _operations(fleet, dr_event, fw_rollout)
    print()
    text, files, failed = bill_and_day(out / "meterkit.db", out)
    print(text)
    print()
    _files_and_next(out, files, failed, dr_event)
    return 0 if lost == 0 and snapped == len(rows) and not failed and fw_rollout.state == "done" else 1


def alert_lines(db: Store) -> str:
    """The security monitor's verdict on the run (docs/alerts.md): an honest fleet raises nothing."""
    rows = alert_rows(db, state=None)
    if not rows:
        return "security alerts: none (the monitor watched every frame, connection and refusal of the run)"
    return f"security alerts: {len(rows)}\n" + "\n".join("  " + line for line in format_alerts(rows).splitlines())


def _hours(line: str) -> float | None:
    try:
        return float(line.split()[0])
    except (ValueError, IndexError):
        return None


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def run_demo(hours: float = 24.0, out: str = "out/demo", speed: float = 1440.0, tls: bool = True) -> int:
    return asyncio.run(_run(Path(out), hours, speed, tls))
