"""`make demo`: a fleet of simulated meters reporting to a concentrator, 24 virtual hours in about a minute.

Six meters (the real firmware under the MicroPython Unix port, each with its own simulated INA219 and load),
half over serial (ptys), half over TCP, report to a concentrator with SQLite. Meter 2's serial cable is pulled
for four hours; meter 5 loses power for two. At the end: a summary table, the database, a plot of the load
profiles, and the commands to look further.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from meter import frame
from meterkit.fleet import Fleet, MeterSpec
from meterkit.sim import progress_bar

DEMO_FLEET = [
    MeterSpec("meter-1", "solar-day", "serial", seed=1),
    MeterSpec("meter-2", "constant", "serial", seed=2),
    MeterSpec("meter-3", "random-walk", "serial", seed=3),
    MeterSpec("meter-4", "steps", "tcp", seed=4),
    MeterSpec("meter-5", "export", "tcp", seed=5),
    MeterSpec("meter-6", "mixed", "tcp", seed=6),
]
LINK_CUT = ("meter-2", 6.0, 10.0)  # serial cable pulled from 06:00 to 10:00 (fleet time)
POWER_CUT = ("meter-5", 14.0, 16.0)  # meter without power from 14:00 to 16:00


def _headend_key(out: Path):
    """The demo's head-end key pair, kept in out/keys (made once, like `meterkit keys new`)."""
    from meterkit import keys

    kdir = out / "keys"
    if not (kdir / "headend.key.pem").exists():
        keys.new_key(kdir)
    return keys.load_private(kdir / "headend.key.pem")


def _frames_produced(path: Path) -> set[int]:
    import cbor2

    seqs = set()
    if path.exists():
        for cose in frame.Deframer().feed(path.read_bytes()):
            seqs.add(cbor2.loads(cbor2.loads(cose).value[2])[3])
    return seqs


def summary(fleet: Fleet) -> tuple[str, list[dict]]:
    db = sqlite3.connect(fleet.db_path)
    status = {r["device"]: r for r in fleet.store.fleet()} if hasattr(fleet.store, "fleet") else {}
    rows = []
    for m in fleet.meters:
        stored = {s for (s,) in db.execute("SELECT seq FROM frames WHERE device = ?", (m.device,))}
        produced = _frames_produced(m.frames_log)
        st = status.get(m.device.hex(), {})
        outages = db.execute("SELECT COUNT(*) FROM outages WHERE device = ?", (m.device,)).fetchone()[0]
        rows.append({
            "meter": m.spec.name, "link": m.spec.link, "scenario": m.spec.scenario,
            "import_kwh": (st.get("import_wh") or 0) / 1000, "export_kwh": (st.get("export_wh") or 0) / 1000,
            "produced": len(produced), "stored": len(stored), "missing": len(produced - stored),
            "backfilled": st.get("gaps_backfilled", 0), "outages": outages,
            "link_cuts": m.link_cuts, "power_cuts": m.power_cuts,
        })
    db.close()
    head = ("meter", "link", "scenario", "import kWh", "export kWh", "frames made", "stored", "missing",
            "back-filled", "outages")
    body = [(r["meter"], r["link"], r["scenario"], f"{r['import_kwh']:.3f}", f"{r['export_kwh']:.3f}",
             str(r["produced"]), str(r["stored"]), str(r["missing"]), str(r["backfilled"]), str(r["outages"]))
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

    db = sqlite3.connect(fleet.db_path)
    fig, axes = plt.subplots(len(fleet.meters), 1, figsize=(10, 1.7 * len(fleet.meters)), sharex=True)
    for ax, m in zip(axes, fleet.meters, strict=True):
        rows = db.execute("SELECT end_time, import_mwh, export_mwh, period_s FROM intervals WHERE device = ? "
                          "ORDER BY end_time", (m.device,)).fetchall()
        xs, ys = [], []
        for (t0, i0, e0, _), (t1, i1, e1, _p) in zip(rows, rows[1:], strict=False):
            hours = (t1 - fleet.start_unix) / 3600
            xs.append(hours)
            ys.append(((i1 - i0) - (e1 - e0)) / ((t1 - t0) / 3600) / 1000)  # mWh per hour / 1000 = W
        ax.step(xs, ys, where="pre", lw=1.2, color="tab:blue")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel("W", rotation=0, labelpad=12)
        ax.set_title(f"{m.spec.name} ({m.spec.scenario}, {m.spec.link})", fontsize=9, loc="left")
        for name, t_from, t_to, colour, label in (
                (LINK_CUT[0], LINK_CUT[1], LINK_CUT[2], "tab:orange", "link down"),
                (POWER_CUT[0], POWER_CUT[1], POWER_CUT[2], "tab:red", "power cut")):
            if m.spec.name == name:
                ax.axvspan(t_from, t_to, color=colour, alpha=0.2, label=label)
                ax.legend(loc="upper right", fontsize=8)
    db.close()
    axes[-1].set_xlabel("hours (fleet time, UTC from 2026-11-01 00:00)")
    axes[-1].set_xlim(0, fleet.hours)
    fig.suptitle("meterkit demo: load profiles (99.1.0, 15-minute rows) as stored by the concentrator")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def _run(out: Path, hours: float, speed: float) -> int:
    fleet = Fleet(out, DEMO_FLEET, _headend_key(out), out / "meterkit.db", hours=hours, speed=speed)
    scale = hours / 24.0
    fleet.at(LINK_CUT[1] * scale, "cut_link", LINK_CUT[0])
    fleet.at(LINK_CUT[2] * scale, "restore_link", LINK_CUT[0])
    fleet.at(POWER_CUT[1] * scale, "power_cut", POWER_CUT[0])
    fleet.at(POWER_CUT[2] * scale, "power_on", POWER_CUT[0])
    print(f"meterkit demo: {len(DEMO_FLEET)} simulated meters (the real firmware under the MicroPython Unix "
          f"port), {hours:g} h of virtual time at {speed:g}x")
    print("  provisioning: each meter makes its key, the head-end key is installed, public keys registered")
    await fleet.setup()
    try:
        await fleet.run(progress_bar("  running "))
        table, rows = summary(fleet)
        plot(fleet, out / "load-profiles.png")
    finally:
        await fleet.close()
    print()
    for line in fleet.log:
        print("  " + line)
    print()
    print(table)
    lost = sum(r["missing"] for r in rows)
    print(f"\n{sum(r['stored'] for r in rows)} frames stored, {lost} of the frames the meters made missing.")
    print(f"database: {out / 'meterkit.db'}   plot: {out / 'load-profiles.png'}")
    print(f"look further: .venv/bin/meterkit status --db {out / 'meterkit.db'}")
    print(f"              .venv/bin/meterkit export --db {out / 'meterkit.db'} --csv --table intervals")
    return 0 if lost == 0 else 1


def run_demo(hours: float = 24.0, out: str = "out/demo", speed: float = 1440.0) -> int:
    return asyncio.run(_run(Path(out), hours, speed))
