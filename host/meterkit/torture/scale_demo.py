"""`meterkit demo --scale` (`make demo-scale`): several concentrators on one PostgreSQL behind HAProxy, one of them
SIGKILLed mid-run and restarted, and nothing lost.

The failover torture scenario (meterkit.torture.failover), run once and told as it happens: a PostgreSQL server
of its own (meterkit.testing.pgserver, a throw-away cluster in a temporary directory), 2 `meterkit concentrator`
processes on it with one head-end key, a real HAProxy in front, protocol-level meters (signed readings every
0.5 s, each ack and command checked as the firmware checks it) and a few real firmware meters (the MicroPython
Unix port) on the fleet's accelerated clock (60x: a reading a virtual minute is one a real second). Billing
resets and set-times are queued; the concentrator serving the most firmware meters is SIGKILLed, HAProxy takes
it out, its meters reconnect to the other, it is restarted and takes meters again. The summary compares every
frame the meters made with what the database holds, and every command queued with what the meters executed.
`make demo` (one concentrator, SQLite, 24 virtual hours) is meterkit.sim.demo.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from meterkit.torture import failover
from meterkit.torture.tally import Result

_DATABASES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
DEFAULT = failover.Plan(concentrators=2, meters=100, seconds=30.0, firmware=2, tls=True)


def run_scale_demo(out: str | Path = "out/demo-scale", meters: int = DEFAULT.meters,
                   firmware: int = DEFAULT.firmware, seconds: float = DEFAULT.seconds,
                   concentrators: int = DEFAULT.concentrators, db: str = "pg", seed: int = 1,
                   echo: Callable[[str], None] = print) -> int:
    """Run it, narrate, print the summary; 0 if nothing was lost and every check held, 1 if not, 2 when
    PostgreSQL or HAProxy is missing. db: "pg" (a server of its own) or a postgresql:// URL of a fresh database."""
    from meterkit.testing.haproxy import HAProxyUnavailable, haproxy_bin
    from meterkit.testing.pgserver import PgUnavailable

    if meters < 1 or concentrators < 2 or firmware < 0 or seconds <= 0:
        echo("meterkit demo --scale: needs at least 1 meter, 2 concentrators and a positive --seconds")
        return 2
    plan = failover.Plan(concentrators=concentrators, meters=meters, seconds=seconds, firmware=firmware,
                         tls=DEFAULT.tls)
    out = Path(out)
    _clear(out / f"n{concentrators}")
    t0 = time.monotonic()

    def say(text: str) -> None:
        echo(f"[{time.monotonic() - t0:6.1f} s] {text}")

    echo(f"meterkit demo --scale: {concentrators} concentrators on PostgreSQL behind HAProxy, {meters} protocol "
         f"meters + {firmware} firmware meters, {seconds:g} s of readings; one concentrator is SIGKILLed mid-run"
         + ("; every meter over TLS, through HAProxy untouched" if plan.tls else ""))
    try:
        haproxy_bin()
        result = failover.run_plans(out, (plan,), seed, db, "demo", say)
    except (PgUnavailable, HAProxyUnavailable, ImportError) as e:
        echo(f"meterkit demo --scale needs PostgreSQL, psycopg and HAProxy: {e}")
        return 2
    echo("")
    echo(summary(result))
    echo(f"\nfiles: {out}/n{concentrators}/ (concentrator logs c*.log, meters' frames logs, HAProxy's config)")
    return 0 if result.ok else 1


def _clear(rdir: Path) -> None:
    """A previous run's round directory (its head-end key would be refused, its frames logs appended to)."""
    import shutil

    if rdir.exists():
        shutil.rmtree(rdir)


def summary(result: Result) -> str:
    """The "nothing lost" summary of one failover round, for people."""
    fig = result.figures
    [r] = fig["rounds"]
    killed = r.get("killed", "?")
    proto = [t for t in result.tallies if t.meter.startswith("p")]
    lines = [
        "What the meters made, and what the database holds:",
        f"  frames made            {fig['frames']:>8}  ({sum(t.made for t in proto)} by protocol meters, "
        f"{r.get('firmware_frames', 0)} by firmware meters)",
        f"  frames stored          {fig['stored']:>8}  lost {fig['lost']}, duplicates {fig['duplicates']}, "
        f"register decreases {fig['decreases']}, still unacknowledged {fig['pending']}",
        f"  acks verified          {fig['acks_verified']:>8}  by the protocol meters (signature, device, "
        f"fresh counter, not expired); refused {fig['refused']}",
        f"  commands               {fig['commands_queued']:>8}  queued for protocol meters, "
        f"{fig['commands_executed_once']} executed exactly once; firmware billing resets "
        f"{fig.get('firmware_commands', 0)}, each one billing snapshot",
        "",
        "The failover:",
        f"  SIGKILL {killed} (it served {r.get('sessions_before_kill', {}).get(killed, '?')} connections, "
        f"{r.get('firmware_on_killed', 0)} of them firmware meters)",
        f"  HAProxy marked it down after        {_s(r.get('marked_down_s'))}",
        f"  every protocol meter acked again    {_s(r.get('all_served_again_s'))}",
        f"  restarted; HAProxy had it up after  {_s(r.get('back_up_s'))}   (times from the kill)",
        "",
        "  meters connected to      before the kill   after the kill   after the restart   (HAProxy's sessions)",
    ]
    for name in sorted(r.get("sessions_before_kill", {})):
        cells = [r.get(k, {}).get(name, "-") for k in ("sessions_before_kill", "sessions_after_kill",
                                                       "sessions_after_restart")]
        label = name + (" (killed)" if name == killed else "")
        lines.append(f"  {label:<24}{cells[0]:>16}{cells[1]:>17}{cells[2]:>20}")
    lines.append("")
    if result.ok:
        lines.append(f"Nothing lost: all {fig['frames']} frames stored exactly once, every ack verified, every "
                     f"command executed once, on {_DATABASES.get(fig.get('database'), 'the database')} "
                     f"({fig['wall_s']} s).")
    else:
        lines.append("SOMETHING WENT WRONG:")
        lines += [f"  FAILED {f}" for f in result.failures[:20]]
        lines += [f"  FAILED {t.meter}: lost {t.lost}, duplicates {len(t.duplicates)}, pending {t.pending}"
                  for t in result.tallies if not t.clean][:20]
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def main() -> int:  # python -m meterkit.torture.scale_demo: the default demo
    return run_scale_demo(echo=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
