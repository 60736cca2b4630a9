"""`meterkit bench --only scale`: one concentrator on SQLite against one on PostgreSQL, and 2 concentrators
against 1 on PostgreSQL (through HAProxy, and direct), side by side in one run; PostgreSQL's per-frame cost
beside the bare ECDSA verify (issue 13, "Performance"; docs/performance.md).

Every setup gets the same frames, signed before any clock starts: `meters` protocol-level meters
(meterkit.testing.rig.SimMeter, `cryptography` signing the bytes meter.cose makes), `frames` readings each,
written once to a file. For each setup:

- a fresh database (a SQLite file, synchronous=FULL as `meterkit concentrator` opens it; or a new database on
  one PostgreSQL server started for the bench by meterkit.testing.pgserver, durable: fsync and
  synchronous_commit on), the meters registered;
- real `meterkit concentrator` processes on it, and, for the `-lb` setups, a real HAProxy in front of them
  (meterkit.testing.haproxy: leastconn, PROXY v2 headers, as the scale demo runs it);
- the load generator (meterkit.bench.loadgen) in a process of its own: every meter connects from its own
  loopback address and keeps at most `window` frames unacknowledged, sending more as acknowledgements come.

The rate is what the meters see acknowledged (an ack only follows a commit): the steady state between 10 % and
90 % of all frames acknowledged. At those two instants this process samples the CPU time of every process
involved (meterkit.bench.cpu): the concentrators, PostgreSQL (the postmaster and all its children), HAProxy, the
load generator, and the whole machine (what is left is other users and the kernel). Afterwards the frames in
the database are counted (all must be there, once) and the load generator verifies every ack it received.

The per-frame costs (`store_costs`), measured in this process on the same frames: the bare ECDSA verify,
verify_and_decode, and the concentrator's store step for a batch (frames, readings, delivery state, counters,
COMMIT: what headend.storage and headend.counters write) on SQLite and on PostgreSQL, with PostgreSQL's own CPU
time per frame beside the client's.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meter.frame import encode_frame
from meterkit import wire as P
from meterkit.bench import cpu
from meterkit.bench.ingest import bare_rate, prepare_bare, reading_frames
from meterkit.store import open_store
from meterkit.store.records import NewMeter
from meterkit.testing.haproxy import HAProxy
from meterkit.testing.pgserver import PgServer
from meterkit.testing.rig import SimMeter
from meterkit.wire.keys import load_private, new_key

LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str  # "sqlite" or "pg"
    concentrators: int
    haproxy: bool
    tls: Any = None  # wire.tlscerts.TlsFiles: the concentrators serve TLS, the meters pin its CA (bench.tls)


SETUPS = (Setup("sqlite-1", "sqlite", 1, False), Setup("pg-1", "pg", 1, False), Setup("pg-1-lb", "pg", 1, True),
          Setup("pg-2-lb", "pg", 2, True), Setup("pg-2", "pg", 2, False))


def _source(i: int) -> str:
    """Meter i's own loopback address (never 127.0.0.1: HAProxy's, whose PROXY headers are read)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


class _Concentrator:
    """One `meterkit concentrator` process."""

    def __init__(self, name: str, db: str, key: Path, log: Path, tls: Any = None):
        self.name, self.db, self.key, self.log = name, db, key, log
        self.tls = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)] if tls is not None else []
        self.proc: subprocess.Popen | None = None

    def start(self) -> int:
        cmd = [sys.executable, "-m", "meterkit.cli", "concentrator", "--db", self.db, "--key", str(self.key),
               "--listen", "127.0.0.1:0", "--proxy-protocol-from", "127.0.0.1", "--clock-drift-max", "off",
               "--stats-every", "3600", *self.tls]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"concentrator {self.name} did not start: {line!r} "
                               f"{self.log.read_text(errors='replace')[-1500:]}")
        return int(line.rsplit(":", 1)[1])

    def stop(self) -> dict:
        """SIGTERM; its final stats (the JSON it prints on the way out)."""
        if self.proc is None:
            return {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        start = 0 if out.startswith("{") else out.find("\n{") + 1
        stats = json.loads(out[start:]) if start > 0 or out.startswith("{") else {}
        return {**stats, "exit_code": self.proc.returncode}


class _Fixture:
    """What every setup shares: the head-end key, the meters and their signed frames, the PostgreSQL server."""

    def __init__(self, tmp: Path, meters: int, frames: int, window: int, pg: PgServer):
        self.tmp, self.window, self.pg = tmp, window, pg
        self.key = new_key(tmp / "keys")[0]
        self.headend_pub = P.public_bytes(load_private(self.key).public_key())
        self.meters = [SimMeter() for _ in range(meters)]
        for m in self.meters:
            m.t = int(time.time())
        # per meter, in sequence order. A second of meter time apart: a pair of readings whose meter times and
        # receive times advance alike (within clock_jitter_s), as a meter's prompt readings do, so the
        # concentrator measures each meter's clock drift on every reading as it does in service
        self.cose = reading_frames(self.meters, meters * frames, step_s=1)
        self.frames_file = tmp / "frames.pickle"
        with open(self.frames_file, "wb") as f:
            pickle.dump({"frames": [[encode_frame(c) for c in fr] for fr in self.cose],
                         "devices": [m.device_id for m in self.meters],
                         "sources": [_source(i) for i in range(meters)], "headend_pub": self.headend_pub}, f)
        self.n = meters * frames
        self.runs = 0

    def database(self, backend: str) -> str:
        """A fresh database with the meters registered."""
        self.runs += 1
        db = self.pg.create_database() if backend == "pg" else str(self.tmp / f"run{self.runs}.db")
        with open_store(db) as store:
            store.register_meters([NewMeter(m.public_key, f"m{i}", 60) for i, m in enumerate(self.meters)])
            store.commit()
        return db

    def postgres_pids(self) -> list[int]:
        try:
            return cpu.tree(int((self.pg.data / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return []


def count_frames(db: str) -> int:
    """Frames stored, as the meters' rows count them (written in each batch's transaction)."""
    store = open_store(db, create=False, readonly=True)
    try:
        return sum(m.frames_stored for m in store.meters())
    finally:
        store.close()


def _drive(fx: _Fixture, targets: list[tuple[str, int]], groups: dict[str, Callable[[], list[int]]],
           tls: Any = None) -> dict:
    """Run the load generator against `targets`; its result, with the CPU each group used in the steady window
    (and, in connect_cpu_s, while the meters connected: with TLS, their handshakes)."""
    pin = [str(tls.ca), tls.server_name] if tls is not None else []
    before = cpu.sample(groups)
    proc = subprocess.Popen([sys.executable, "-m", "meterkit.bench.loadgen", str(fx.frames_file),
                             json.dumps(targets), str(fx.window), *pin], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(LOAD_TIMEOUT_S, proc.kill)
    watchdog.start()
    groups = {**groups, "load generator": lambda: [proc.pid]}
    marks: dict[str, tuple[float, dict]] = {}
    result = None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the load generator did not connect its meters")
        marks["go"] = (time.perf_counter(), cpu.sample(groups))
        connect_cpu = cpu.spent(before, marks["go"][1])
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for line in proc.stdout:
            word = line.split(" ", 1)[0].strip()
            if word in ("mark", "done"):
                marks[line.split()[-1]] = (time.perf_counter(), cpu.sample(groups))
            elif word == "result":
                result = json.loads(line.split(" ", 1)[1])
                break
        proc.wait(60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise RuntimeError(f"the load generator gave no result (exit {proc.returncode}; timeout "
                           f"{LOAD_TIMEOUT_S:.0f} s)")
    (t10, s10), (t90, s90) = marks["10"], marks["90"]
    used = cpu.spent(s10, s90)
    window_s = t90 - t10
    frames = result["steady_frames"]
    ours = sum(v for k, v in used.items() if k != cpu.MACHINE and not k.startswith("concentrator "))
    result["cpu_s"] = used
    result["connect_cpu_s"] = connect_cpu
    result["cpu_cores"] = {k: round(v / window_s, 3) for k, v in used.items()}
    result["cpu_us_per_frame"] = {k: round(v / frames * 1e6, 1) for k, v in used.items()}
    result["cpu_cores"]["other"] = round((used[cpu.MACHINE] - ours) / window_s, 3)
    return result


def run_setup(fx: _Fixture, setup: Setup) -> dict:
    """One setup, start to finish (see the module docstring)."""
    db = fx.database(setup.backend)
    run_dir = fx.tmp / f"{setup.name}-{fx.runs}"
    run_dir.mkdir()
    concs = [_Concentrator(f"c{i + 1}", db, fx.key, run_dir / f"c{i + 1}.log", setup.tls)
             for i in range(setup.concentrators)]
    lb, stats = None, []
    try:
        ports = [c.start() for c in concs]
        if setup.haproxy:
            lb = HAProxy(run_dir / "haproxy", [("127.0.0.1", p) for p in ports], send_proxy=True).start()
            targets = [lb.address] * len(fx.meters)
        else:
            targets = [("127.0.0.1", ports[i % len(ports)]) for i in range(len(fx.meters))]
        groups: dict[str, Callable[[], list[int]]] = {
            f"concentrator {c.name}": (lambda c=c: [c.proc.pid]) for c in concs}
        groups["concentrators"] = lambda: [c.proc.pid for c in concs]
        if setup.backend == "pg":
            groups["PostgreSQL"] = fx.postgres_pids
        if lb is not None:
            groups["HAProxy"] = lambda: [lb.pid]
        res = _drive(fx, targets, groups, setup.tls)
        if lb is not None:
            res["haproxy_connections"] = {k: s.total for k, s in sorted(lb.servers().items())}
    finally:
        if lb is not None:
            lb.stop()
        stats = [c.stop() for c in concs]
    res.update(setup=setup.name, backend=setup.backend, concentrators=setup.concentrators, haproxy=setup.haproxy,
               stored=count_frames(db), stored_by_concentrator=[s.get("frames_stored", 0) for s in stats],
               exit_codes=[s["exit_code"] for s in stats],
               batches=sum(s.get("batches", 0) for s in stats))
    if setup.backend == "pg":
        fx.pg.drop_database(db.rsplit("/", 1)[1])
    return res


# --- per-frame costs, in this process -------------------------------------------------------------------------

def _interleaved(per_meter: list[list[bytes]]) -> list[bytes]:
    """The frames in the order a concentrator takes them: a few of every meter in turn."""
    return [fr[j] for j in range(max(map(len, per_meter))) for fr in per_meter if j < len(fr)]


def _store_step(store: Any, msgs: list[P.Message], batch: int) -> float:
    """Seconds to store `msgs` as a concentrator's batches do: frames, readings, each meter's delivery state,
    the counters, COMMIT."""
    from meterkit.store.records import DeliveryState
    from meterkit.wire.records import Frame, records_of

    chunks = [(msgs[i:i + batch], [Frame.of(m) for m in msgs[i:i + batch]],
               [r for m in msgs[i:i + batch] for r in records_of(m)]) for i in range(0, len(msgs), batch)]
    t0 = time.perf_counter()
    for chunk, frames, readings in chunks:
        now = time.time()
        store.add_frames(frames, now)
        store.add_readings(readings)
        last = {m.device_id: m.seq for m in chunk}
        store.save_delivery([DeliveryState(dev, now, seq, 0, seq + 1, seq) for dev, seq in last.items()])
        store.add_counters({"frames_stored": len(chunk), "batches": 1, "acks_sent": len(last)})
        store.commit()
    return time.perf_counter() - t0


def store_costs(fx: _Fixture, n: int, batch: int) -> dict:
    """Microseconds per frame: bare ECDSA verify, verify_and_decode, the store step on SQLite and on PostgreSQL
    (wall time of the client; on PostgreSQL also the server's CPU time and the client's)."""
    frames = _interleaved(fx.cose)[:n]
    keys = {m.device_id: P.public_from_bytes(m.public_key) for m in fx.meters}
    bare = bare_rate(prepare_bare(fx.meters, frames))
    t0 = time.perf_counter()
    msgs = [P.verify_and_decode(c, keys.get) for c in frames]
    out = {"frames": len(frames), "batch": batch, "bare_verify_us": round(1e6 / bare, 1),
           "verify_and_decode_us": round((time.perf_counter() - t0) / len(frames) * 1e6, 1)}
    for backend in ("sqlite", "pg"):
        db = fx.database(backend)
        groups = {"PostgreSQL": fx.postgres_pids, "client": lambda: [os.getpid()]}
        with open_store(db) as store:
            a = cpu.sample(groups)
            wall = _store_step(store, msgs, batch)
            used = cpu.spent(a, cpu.sample(groups))
        if count_frames(db) != len(msgs):
            raise RuntimeError(f"the store step on {backend} lost frames")
        out[f"store_{backend}_us"] = round(wall / len(msgs) * 1e6, 1)
        out[f"store_{backend}_client_cpu_us"] = round(used["client"] / len(msgs) * 1e6, 1)
        if backend == "pg":
            out["store_pg_server_cpu_us"] = round(used["PostgreSQL"] / len(msgs) * 1e6, 1)
            fx.pg.drop_database(db.rsplit("/", 1)[1])
    return out


# --- the bench ----------------------------------------------------------------------------------------------

def bench_scale(meters: int = 200, frames: int = 200, window: int = 32, rounds: int = 2,
                setups: tuple[Setup, ...] = SETUPS, cost_frames: int = 10000, cost_batch: int = 256,
                pg: PgServer | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Every setup `rounds` times, interleaved (a busy moment of the machine hits them alike); each setup's
    median round by steady rate is reported (the upper one of an even number: of 2, the faster). pg: a running
    server to use (default: a durable one of its own, fsync and synchronous_commit on). See the module
    docstring."""
    say = log or (lambda _m: None)
    from meterkit.testing.haproxy import haproxy_bin
    haproxy_bin()  # HAProxyUnavailable now rather than after the first setups
    with tempfile.TemporaryDirectory(prefix="meterkit-bench-scale-") as tmp, \
            contextlib.nullcontext(pg) if pg is not None else PgServer(fast=False) as pg:
        say(f"signing {meters * frames} frames for {meters} meters ...")
        fx = _Fixture(Path(tmp), meters, frames, window, pg)
        runs: dict[str, list[dict]] = {s.name: [] for s in setups}
        for r in range(max(1, rounds)):
            for s in setups:
                say(f"round {r + 1}: {s.name} ({s.concentrators} concentrator(s) on {s.backend}"
                    f"{', through HAProxy' if s.haproxy else ''}) ...")
                runs[s.name].append(run_setup(fx, s))
        say("per-frame costs: verify, store step on SQLite and PostgreSQL ...")
        costs = store_costs(fx, min(cost_frames, fx.n), cost_batch)
    out: dict[str, Any] = {"meters": meters, "frames": meters * frames, "window": window, "rounds": max(1, rounds),
                           "pg_durable": not pg.fast, "load_average": os.getloadavg(), "costs": costs, "setups": {}}
    for name, rs in runs.items():
        best = sorted(rs, key=lambda x: x["steady_frames_per_s"])[len(rs) // 2]
        out["setups"][name] = {**best, "rounds_steady_frames_per_s": [x["steady_frames_per_s"] for x in rs]}
    out["ratios"] = _ratios(out["setups"])
    return out


def _ratios(s: dict) -> dict:
    def ratio(a: str, b: str) -> float | None:
        if a in s and b in s:
            return round(s[a]["steady_frames_per_s"] / s[b]["steady_frames_per_s"], 3)
        return None

    return {"pg_vs_sqlite": ratio("pg-1", "sqlite-1"), "two_vs_one_haproxy": ratio("pg-2-lb", "pg-1-lb"),
            "two_vs_one_direct": ratio("pg-2", "pg-1"), "haproxy_one": ratio("pg-1-lb", "pg-1"),
            "haproxy_two": ratio("pg-2-lb", "pg-2")}


def scale_figures(quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """`meterkit bench --only scale`: the figures, flat (scale_* keys) with the whole result under scale."""
    res = bench_scale(meters=100 if quick else 200, frames=100 if quick else 200, rounds=1 if quick else 2,
                      log=log)
    flat = {f"scale_{k}_frames_per_s": v["steady_frames_per_s"] for k, v in res["setups"].items()}
    flat.update({f"scale_ratio_{k}": v for k, v in res["ratios"].items()})
    return {**flat, "scale": res}


def _cell(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_scale(f: dict) -> str:
    """The side-by-side table of a bench_scale result (the `scale` key of scale_figures)."""
    head = ("setup", "frames/s", "conc. cores", "PG cores", "HAProxy", "load gen", "other", "machine",
            "conc. us/fr", "PG us/fr", "stored", "acks bad")
    rows = [head]
    for name, s in f["setups"].items():
        c, u = s["cpu_cores"], s["cpu_us_per_frame"]
        rows.append((name, f"{s['steady_frames_per_s']:.0f}", _cell(c.get("concentrators")),
                     _cell(c.get("PostgreSQL")), _cell(c.get("HAProxy")), _cell(c.get("load generator")),
                     _cell(c.get("other")), _cell(c.get(cpu.MACHINE)), _cell(u.get("concentrators"), "{:.0f}"),
                     _cell(u.get("PostgreSQL"), "{:.0f}"), f"{s['stored']}/{s['frames']}", str(s["acks_refused"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    pick = "the faster of 2 rounds" if f["rounds"] == 2 else f"median of {f['rounds']} rounds"
    lines = [f"{f['meters']} meters, {f['frames']} frames, window {f['window']}, {pick}; "
             "steady state (10-90 % acknowledged); CPU in cores over that window"]
    lines += ["  " + "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    r = f["ratios"]
    lines.append(f"ratios: PostgreSQL/SQLite (1 concentrator) {_cell(r['pg_vs_sqlite'], '{:.3f}')}; 2/1 "
                 f"concentrators through HAProxy {_cell(r['two_vs_one_haproxy'], '{:.3f}')}, direct "
                 f"{_cell(r['two_vs_one_direct'], '{:.3f}')} (goal >= 1.6); HAProxy's cost: 1 concentrator "
                 f"{_cell(r['haproxy_one'], '{:.3f}')}, 2 {_cell(r['haproxy_two'], '{:.3f}')} of direct")
    busy = max(s["cpu_cores"]["other"] for s in f["setups"].values())
    if busy > 0.2:
        lines.append(f"NOTE: other work on this machine took up to {busy:.2f} cores during a setup (column other): "
                     "the rates and ratios are not this machine's capacity")
    k = f["costs"]
    lines.append(f"per frame ({k['frames']} frames, batches of {k['batch']}): bare ECDSA verify "
                 f"{k['bare_verify_us']} us, verify_and_decode {k['verify_and_decode_us']} us; store step (frames, "
                 f"readings, delivery, counters, commit) SQLite {k['store_sqlite_us']} us, PostgreSQL "
                 f"{k['store_pg_us']} us wall = client CPU {k['store_pg_client_cpu_us']} us + server CPU "
                 f"{k['store_pg_server_cpu_us']} us + waiting")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual run: python -m meterkit.bench.scale [meters frames rounds]
    a = [int(x) for x in sys.argv[1:4]]
    res = bench_scale(*a[:2], rounds=a[2] if len(a) > 2 else 2, log=lambda m: print(m, file=sys.stderr))
    print(format_scale(res))
    print(json.dumps(res, indent=1))
