"""`meterkit bench`: figures measured side by side in one run (never asserted as wall-clock limits in tests)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from meterkit.device.toolchain import firmware_dir, micropython_cmd, mp_env
from meterkit.sim.runner import SimError, run_sim

# Heap in use once the meter's modules are imported (gc'd before and after), measured inside micropython.
_IMPORT_HEAP_SNIPPET = """
import gc
gc.collect()
before = gc.mem_alloc()
import meter.app, meter.hal, meter.identity, meter.messages, meter.report, meter.seqno, meter.p256
meter.p256.precompute()
gc.collect()
print(gc.mem_alloc() - before)
"""


def _micropython_json(script_args: list[str], timeout: float = 600) -> dict:
    proc = subprocess.run(micropython_cmd(*script_args), capture_output=True, text=True, timeout=timeout,
                          env=mp_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script_args[0]} failed: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def heap_after_import() -> int:
    # Measured on the mpy-cross build: that is how the firmware is deployed (no parsing on the device).
    proc = subprocess.run(micropython_cmd("-c", _IMPORT_HEAP_SNIPPET), capture_output=True, text=True,
                          env=mp_env(compiled=True), check=True)
    return int(proc.stdout.strip().splitlines()[-1])


def smallest_heap_kib(hours_probe: float, confirm_hours: float, lo: int = 8, hi: int = 320) -> dict:
    """Binary-search the smallest heap cap (KiB) in which a sim completes; confirm it with a longer run.

    The meter's memory does not grow with simulated time (fixed buffers, checkpoints overwrite), so short
    probes find the edge and one full-length run at that cap confirms it.
    """
    # The whole meter, signing a reading every minute and a profile row every 15 minutes.
    def completes(kib: int, hours: float) -> bool:
        try:
            run_sim("solar-day", hours, heap=f"{kib}K", timeout=900)
            return True
        except SimError:
            return False

    if not completes(hi, hours_probe):
        return {"smallest_heap_kib": None, "note": f"did not complete even with {hi} KiB"}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if completes(mid, hours_probe):
            hi = mid
        else:
            lo = mid
    confirmed = completes(hi, confirm_hours)
    return {"smallest_heap_kib": hi, "smallest_heap_confirmed_hours": confirm_hours if confirmed else None}


def firmware_frame_sizes(hours: float = 2.0) -> dict:
    """Sizes of the frames a simulated meter really sent (reading, one-row interval), plus a four-row
    interval frame built by the firmware's own message code (meter.messages, the same bytes under CPython)."""
    import statistics
    import tempfile

    import cbor2

    from meter import frame, messages

    with tempfile.TemporaryDirectory(prefix="meterkit-bench-") as tmp:
        frames_path = Path(tmp) / "frames.bin"
        run_sim("solar-day", hours, start=1793527200, frames_out=frames_path)  # 10:00 UTC, sun up
        stream = frames_path.read_bytes()
        by_kind: dict[int, list[int]] = {}
        for cose in frame.Deframer().feed(stream):
            kind = cbor2.loads(cbor2.loads(cose).value[2])[1]
            by_kind.setdefault(kind, []).append(len(cose))

        class _Seq:
            next = 4321

            def take(self):
                return self.next

        from meter.identity import Identity

        ident = Identity(tmp)
        rows = [[1793527200 + 900 * i, 123456789 + 5000 * i, 0, 0] for i in range(1, 5)]
        four = messages.Builder(ident, _Seq(), lambda: 1793531000).cose(
            messages.INTERVALS, 0, messages.intervals_body(rows, 900))[1]
    out = {}
    for kind, name in ((messages.READING, "reading"), (messages.INTERVALS, "interval_1_row")):
        sizes = by_kind.get(kind, [])
        if sizes:
            out[f"frame_{name}_cose_bytes_max"] = max(sizes)
            out[f"frame_{name}_cose_bytes_median"] = int(statistics.median(sizes))
    out["frame_interval_4_rows_cose_bytes"] = len(four)
    out["frame_framing_overhead_bytes"] = len(frame.encode_frame(four)) - len(four)
    return out


def tou_figures(hours: float = 12.0) -> dict:
    """The register model's cost, side by side in one run: the same simulated meter (frames, constant load)
    with the single-rate default calendar and with a two-rate calendar across a billing boundary (every
    boundary is a cut of a conversion cycle); plus the sizes of its two-tariff readings and billing snapshot."""
    import statistics
    import tempfile

    import cbor2

    from meter import frame, messages

    night = firmware_dir().parent / "examples" / "tariffs" / "night-2rate.calendar.json"
    start = 1793484000  # 2026-10-31 22:00 UTC: the 1 November billing midnight (CET) an hour later
    walls = {"single": [], "two_rate": []}
    sizes: dict[int, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="meterkit-bench-tou-") as tmp:
        for rnd in range(2):  # alternate, so machine load hits both alike
            for name, cal in (("single", None), ("two_rate", night)):
                out = Path(tmp) / f"{name}-{rnd}.bin"
                r = run_sim("constant", hours, start=start, calendar=cal, frames_out=out)
                walls[name].append(r["wall_ms"])
                if name == "two_rate" and rnd == 0:
                    for cose in frame.Deframer().feed(out.read_bytes()):
                        kind = cbor2.loads(cbor2.loads(cose).value[2])[1]
                        sizes.setdefault(kind, []).append(len(cose))
    single, two = min(walls["single"]), min(walls["two_rate"])
    return {"tou_sim_hours": hours, "tou_wall_ms_single_rate": single, "tou_wall_ms_two_rate": two,
            "tou_cost_ratio": round(two / single, 3),
            "frame_reading_2_tariffs_cose_bytes_median": int(statistics.median(sizes.get(messages.READING, [0]))),
            "frame_billing_2_tariffs_cose_bytes": max(sizes.get(messages.BILLING, [0]))}


def crypto_figures() -> dict:
    """Sign and verify on the Unix port (firmware/sim/bench_crypto.py): medians and fastest samples."""
    c = _micropython_json([str(firmware_dir() / "sim" / "bench_crypto.py")])
    keys = ("sign_ms", "verify_ms", "keygen_ms", "sign_min_ms", "verify_min_ms", "precompute_ms", "table_bytes",
            "cose_sign1_ms", "cose_verify1_ms")
    return {f"crypto_{k}": c[k] for k in keys if k in c}


def run_bench(quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    from meterkit.bench.protocol import bench_host_verify

    say = log or (lambda m: None)
    figures: dict = {}
    say("metrology kernel: viper vs pure twin ...")
    m = _micropython_json([str(firmware_dir() / "sim" / "bench_metrology.py")])
    figures.update({f"metrology_{k}": v for k, v in m.items()})
    say("sign / verify on the Unix port ...")
    figures.update(crypto_figures())
    say("signed frame sizes (a simulated meter's own frames) ...")
    figures.update(firmware_frame_sizes(0.5 if quick else 2.0))
    say("register model: two-rate calendar vs single rate, same sim ...")
    figures.update(tou_figures(3.0 if quick else 12.0))
    say("host verify+decode vs bare cryptography verify ...")
    v = bench_host_verify(n=500 if quick else 2000)
    figures.update({f"host_{k}": v[k] for k in ("host_verify_per_s", "bare_verify_per_s", "ratio",
                                                 "ratio_fastest_blocks")})
    say("concentrator ingest over TCP vs bare verify ...")
    from meterkit.bench.ingest import bench_ingest

    ing = bench_ingest(n=2000 if quick else 5000)
    figures.update({"ingest_frames_per_s": ing["ingest_frames_per_s"], "ingest_ratio": ing["ratio"],
                    "ingest_bare_verify_per_s": ing["bare_verify_per_s"], "ingest_rounds_ratio": ing["rounds_ratio"],
                    "ingest_ack_per_frame_frames_per_s": ing["ingest_ack_per_frame"]["frames_per_s"],
                    "concentrator_heap_bytes_per_meter": ing["memory"]["heap_bytes_per_connection"],
                    "concentrator_rss_bytes_per_meter": ing["memory"]["rss_bytes_per_connection"],
                    "ingest_monitor_ratio": ing["monitor"]["ratio"],
                    "ingest_monitor_cpu_us_per_frame": ing["stages"]["security_monitor_us"]})
    say("heap after import ...")
    figures["heap_after_import_bytes"] = heap_after_import()
    say("smallest heap for a 24 h sim (binary search) ...")
    figures.update(smallest_heap_kib(0.25 if quick else 1.0, 1.0 if quick else 24.0))
    figures.update(board_heap_figures(quick, say))
    return figures


# Sections run alone (`meterkit bench --only NAME`), never by the default bench: they take minutes and start
# servers of their own.
SECTIONS = ("scale", "footprint", "tls", "heap", "fwupdate")


def run_section(name: str, quick: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """One section's figures (SECTIONS): `scale`, meterkit.bench.scale (PostgreSQL, HAProxy, 1 and 2
    concentrators)."""
    if name == "scale":
        from meterkit.bench.scale import scale_figures

        return scale_figures(quick, log)
    if name == "tls":
        from meterkit.bench.tls import tls_figures

        return tls_figures(quick, log)
    if name == "heap":  # the plain heap workload and the one with a firmware update, over fresh keys (mp32)
        from meterkit.bench.fwheap import heap_update_figures

        return {"heap": heap_update_figures(2 if quick else 8, log)}
    if name == "fwupdate":  # an update's delivery time at real-time speed, serial and TCP
        from meterkit.bench.fwdelivery import delivery_figures

        return delivery_figures(quick, log)
    if name == "footprint":
        from meterkit.bench.footprint import connection_costs, measure

        if log:
            log("footprint: a day of 20 meters (a reading a minute, a profile row every 15) on SQLite and PostgreSQL")
        figures = measure(4 if quick else 20, 6 if quick else 24, pg=True)
        if log:
            log("footprint: resident memory per served meter, concentrator and HAProxy")
        figures["connections"] = connection_costs(300 if quick else 3000)
        return {"footprint": figures}
    raise ValueError(f"no bench section {name!r}; there are: {', '.join(SECTIONS)}")


def format_section(name: str, figures: dict) -> str:
    if name == "tls":
        from meterkit.bench.tls import format_tls

        return format_tls(figures["tls"])
    if name == "heap":
        from meterkit.bench.fwheap import format_heap_update

        return format_heap_update(figures["heap"])
    if name == "fwupdate":
        from meterkit.bench.fwdelivery import format_delivery

        return format_delivery(figures)
    if name == "footprint":
        from meterkit.bench.footprint import format_footprint

        return format_footprint(figures["footprint"])
    from meterkit.bench.scale import format_scale

    return format_scale(figures["scale"])


def board_heap_figures(quick: bool, say: Callable[[str], None]) -> dict:
    """The linked, signing meter's heap in the 32-bit interpreter, from .mpy and frozen (meterkit.bench.heap)."""
    from meterkit.bench.heap import heap_figures
    from meterkit.device import mp32

    say("heap on a board: the linked, signing meter in the 32-bit interpreter, from .mpy and frozen ...")
    try:
        return heap_figures(quick, log=say)
    except mp32.Unavailable as e:
        return {"heap_board_note": f"not measured: {e}"}


def format_bench(f: dict) -> str:
    lines = [
        "metrology kernel (same data, one run):",
        f"  viper  {f['metrology_viper_us_per_sample']:.3f} us/sample",
        f"  pure   {f['metrology_pure_us_per_sample']:.3f} us/sample",
        f"  ratio  {f['metrology_ratio']:.1f}x   results equal: {f['metrology_equal']}",
        "signing on the Unix port (median / fastest):",
        f"  sign   {f['crypto_sign_ms']:.2f} / {f['crypto_sign_min_ms']:.2f} ms   (target <= 4 ms)",
        f"  verify {f['crypto_verify_ms']:.2f} / {f['crypto_verify_min_ms']:.2f} ms   (target <= 12 ms)",
        f"  fixed-base table {f['crypto_table_bytes']} bytes, built in {f['crypto_precompute_ms']:.1f} ms",
        "signed frames from a simulated meter (COSE_Sign1 bytes; framing adds "
        f"{f['frame_framing_overhead_bytes']}):",
        f"  reading        median {f.get('frame_reading_cose_bytes_median')}, max "
        f"{f.get('frame_reading_cose_bytes_max')}   (target <= 140)",
        f"  interval 1 row median {f.get('frame_interval_1_row_cose_bytes_median')}",
        f"  interval 4 rows {f['frame_interval_4_rows_cose_bytes']}",
        f"  reading, two tariffs median {f['frame_reading_2_tariffs_cose_bytes_median']}; billing snapshot, two "
        f"tariffs {f['frame_billing_2_tariffs_cose_bytes']}",
        f"register model ({f['tou_sim_hours']:g} h sim, fastest of 2): two-rate calendar {f['tou_wall_ms_two_rate']} ms"
        f" vs single rate {f['tou_wall_ms_single_rate']} ms: ratio {f['tou_cost_ratio']:.3f}",
        f"host verify+decode {f['host_host_verify_per_s']:.0f} frames/s vs bare cryptography verify "
        f"{f['host_bare_verify_per_s']:.0f}/s: ratio {f['host_ratio']:.3f} (target >= 0.8)",
        f"concentrator ingest over TCP (verify, decode, store, commit, ack): {f['ingest_frames_per_s']:.0f} frames/s"
        f" vs bare verify {f['ingest_bare_verify_per_s']:.0f}/s: ratio {f['ingest_ratio']:.3f} (targets >= 5000/s,"
        " >= 0.6)",
        f"the security monitor: {f['ingest_monitor_cpu_us_per_frame']} us a frame; ingest with it / without it "
        f"(frames per CPU-second, interleaved pairs): {f['ingest_monitor_ratio']:.3f}",
        f"concentrator memory per connected meter: {f['concentrator_heap_bytes_per_meter']} B heap, "
        f"{f['concentrator_rss_bytes_per_meter']} B RSS",
        f"heap in use after importing the meter (signing included, table built): "
        f"{f['heap_after_import_bytes'] / 1024:.1f} KiB",
    ]
    if f.get("smallest_heap_kib"):
        conf = f.get("smallest_heap_confirmed_hours")
        lines.append(f"smallest heap cap for a sim run: {f['smallest_heap_kib']} KiB"
                     + (f" (confirmed with a {conf:g} h run)" if conf else " (NOT confirmed by the long run)"))
    else:
        lines.append(f"smallest heap: {f.get('note')}")
    if "heap_board_note" in f:
        lines.append(f"heap on a board: {f['heap_board_note']}")
    elif "heap_mpy_kib" in f:
        from meterkit.bench.heap import format_heap

        lines.append(format_heap(f))
    return "\n".join(lines)
