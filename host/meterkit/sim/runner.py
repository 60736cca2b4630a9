"""Run the real firmware under the MicroPython Unix port against the simulated INA219, in virtual time."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meterkit.device.toolchain import boards_dir, firmware_dir, micropython_module_cmd, mp_env
from meterkit.wire.keys import private_dir

SCENARIOS = ("constant", "steps", "solar-day", "random-walk", "export", "mixed")


class SimError(RuntimeError):
    pass


def sim_command(scenario: str, hours: float, *, seed: int | None = None, heap: str | None = None,
                flash_dir: str | Path | None = None, board: str | Path | None = None,
                start: int | None = None, flags: tuple[str, ...] = ()) -> list[str]:
    # The firmware runs with the checkout as its working directory: hand it absolute paths.
    args = ["--board", str(Path(board).resolve() if board else boards_dir() / "unix-sim.json"),
            "--scenario", scenario, "--hours", repr(float(hours))]
    if seed is not None:
        args += ["--seed", str(seed)]
    if start is not None:
        args += ["--start", str(int(start))]
    if flash_dir is not None:
        args += ["--flash", str(Path(flash_dir).resolve())]
    args += [f"--{f}" for f in flags]
    return micropython_module_cmd("sim.boot", *args, heap=heap)


def sim_env() -> dict[str, str]:
    """The simulated meter runs from the mpy-cross build, as it would be deployed (see compiled_firmware)."""
    return mp_env(compiled=True)


def run_sim(scenario: str, hours: float, *, seed: int | None = None, heap: str | None = None,
            flash_dir: str | Path | None = None, board: str | Path | None = None, start: int | None = None,
            frames_out: str | Path | None = None, pubkey_out: str | Path | None = None, signing: bool = True,
            reading_s: int | None = None, headend_pub: bytes | None = None, link: str | None = None,
            speed: float | None = None, progress: Callable[[float], None] | None = None,
            calendar: str | Path | None = None, billing_day: int | None = None, tariffs: int | None = None,
            demand_period_s: int | None = None, timeout: float = 900) -> dict:
    """Run one simulated meter to the end and return its result, with host-side wall time added.

    signing=False runs the metering core alone (no identity, no frames): the ESP32-sized heap check.
    frames_out receives the raw signed frames the meter sent, pubkey_out its public key (PEM).
    calendar (a TOU calendar JSON file), billing_day, tariffs, demand_period_s override the board's 'tariff'
    section (docs/tariffs.md).
    """
    if scenario not in SCENARIOS:
        raise SimError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="meterkit-sim-") as tmp:
        flash = flash_dir or tmp
        flags = (("progress",) if progress else ()) + (() if signing else ("no-frames",))
        cmd = sim_command(scenario, hours, seed=seed, heap=heap, flash_dir=flash, board=board, start=start,
                          flags=flags)
        if frames_out is not None:
            Path(frames_out).unlink(missing_ok=True)  # the meter appends (a fleet meter keeps one across restarts)
            cmd += ["--frames", str(Path(frames_out).resolve())]
        if reading_s is not None:
            cmd += ["--reading-s", str(int(reading_s))]
        if headend_pub is not None:
            cmd += ["--headend", headend_pub.hex()]
        if link is not None:
            cmd += ["--link", link]
        if speed is not None:
            cmd += ["--speed", repr(float(speed))]
        if calendar is not None:
            cmd += ["--calendar", str(Path(calendar).resolve())]
        for opt, v in (("--billing-day", billing_day), ("--tariffs", tariffs), ("--demand-period", demand_period_s)):
            if v is not None:
                cmd += [opt, str(int(v))]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=sim_env(), cwd=str(firmware_dir().parent))
        result = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@PROGRESS ") and progress:
                done, total = (int(x) for x in line.split()[1:3])
                progress(done / total)
            elif line.startswith("@@RESULT "):
                result = json.loads(line[len("@@RESULT "):])
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SimError(f"simulation did not finish within {timeout:.0f} s") from None
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0 or result is None:
            raise SimError(f"firmware exited with code {proc.returncode}"
                           + (f" (heap cap {heap})" if heap else "") + f":\n{err.strip()[-2000:]}")
    result["wall_s"] = round(time.monotonic() - t0, 3)
    if pubkey_out is not None:
        if "public_key" not in result:
            raise SimError("no public key: the meter ran without signing")
        write_public_pem(bytes.fromhex(result["public_key"]), Path(pubkey_out))
    result["heap_cap"] = heap
    exact = result["exact_import_uwh"] - result["exact_export_uwh"]
    metered = result["metered_import_uwh"] - result["metered_export_uwh"]
    result["exact_net_uwh"] = exact
    result["metered_net_uwh"] = metered
    gross = result["exact_import_uwh"] + result["exact_export_uwh"]
    err_uwh = abs(result["metered_import_uwh"] - result["exact_import_uwh"]) + \
        abs(result["metered_export_uwh"] - result["exact_export_uwh"])
    result["error_pct"] = 100.0 * err_uwh / gross if gross else 0.0
    result["coverage_pct"] = result["coverage_ppm"] / 10000
    result["shunt_duty_pct"] = result["shunt_duty_ppm"] / 10000
    return result


def provision(flash_dir: str | Path, headend_pub: bytes, pubkey_out: str | Path | None = None,
              firmware_pub: bytes | None = None) -> dict:
    """First boot of a simulated meter on `flash_dir`: it makes its key and installs the head-end key (and the
    firmware-signing key, when given: docs/firmware-updates.md)."""
    private_dir(flash_dir)  # the meter's private key lives in its flash
    cmd = sim_command("constant", 0, flash_dir=flash_dir, flags=("provision",)) + ["--headend", headend_pub.hex()]
    if firmware_pub is not None:
        cmd += ["--firmware-key", firmware_pub.hex()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=sim_env(), cwd=str(firmware_dir().parent),
                          timeout=120, check=False)
    if proc.returncode != 0 or "@@RESULT " not in proc.stdout:
        raise SimError(f"provisioning failed: {proc.stderr.strip()[-1500:]}")
    ident = json.loads(proc.stdout.split("@@RESULT ", 1)[1])
    if pubkey_out is not None:
        write_public_pem(bytes.fromhex(ident["public_key"]), Path(pubkey_out))
    return ident


def write_public_pem(pub65: bytes, path: Path) -> None:
    """The meter's 65-byte public point as a SubjectPublicKeyInfo PEM, readable by any tool."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub65)
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def progress_bar(label: str, stream=sys.stderr) -> Callable[[float], None]:
    """A one-line text progress bar (redrawn in place on a terminal, a few lines otherwise)."""
    tty = stream.isatty()
    last = [-1]

    def show(frac: float) -> None:
        pct = min(100, int(frac * 100))
        if pct == last[0] or (not tty and pct // 25 == last[0] // 25):
            return  # on a terminal: every percent; in a log: each quarter crossed
        last[0] = pct
        filled = pct * 30 // 100
        text = f"{label} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%"
        stream.write(("\r" + text) if tty else text + "\n")
        if tty and pct >= 100:
            stream.write("\n")
        stream.flush()

    return show


def format_result(r: dict) -> str:
    def wh(uwh: float) -> str:
        return f"{uwh / 1e6:,.6f} Wh"

    heap = (f"{r['heap_peak'] / 1024:.1f} KiB peak in use, {r['heap_after_gc'] / 1024:.1f} KiB after collect, "
            f"of which the meter's objects {(r['heap_after_gc'] - r['heap_before_meter']) / 1024:.1f} KiB"
            " (the rest: code and the simulator)")
    if r.get("heap_cap"):
        heap += f" (heap capped at {r['heap_cap']})"
    rows = [
        ("scenario", f"{r['scenario']}, {r['hours']:g} h of virtual time"),
        ("exact energy", f"import {wh(r['exact_import_uwh'])}, export {wh(r['exact_export_uwh'])}"
                         "  (what the simulated chip converted)"),
        ("metered energy", f"import {wh(r['metered_import_uwh'])}, export {wh(r['metered_export_uwh'])}"),
        ("error", f"{r['error_pct']:.6f} %"),
        ("coverage", f"{r['coverage_pct']:.4f} % of elapsed time in conversions read"
                     f" (shunt duty {r['shunt_duty_pct']:.2f} %)"),
        ("samples", f"{r['samples']:,} conversion cycles read of {r['chip_cycles']:,}; missed {r['missed']:,}"),
        ("sensor", f"I2C errors {r['i2c_errors']}, chip resets {r['chip_resets']}, overflows {r['overflows']}"),
        ("flash", f"{r['flash_writes']} checkpoint writes, {r['flash_bytes']} bytes"),
        ("frames", f"{r['frames']} signed frames, {r['frame_bytes']:,} bytes, device {r['device_id']}"
                   if "frames" in r else "none (metering only)"),
        ("heap", heap),
        ("wall time", f"{r['wall_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
