"""`meterkit verify FILE --key PUBKEY [--json]`: the transparency tool.

Like the transparency software of OCMF/Eichrecht, it lets anybody holding a meter's public key check a file of
the meter's frames, without trusting the head-end that stored them: every frame is verified exactly as
received (COSE_Sign1, ES256, deterministic CBOR, the CDDL of docs/protocol.md) and shown in words.

FILE is a raw COBS byte stream, as written by `meterkit sim run --frames-out` (or captured from a serial
port: text between frames is skipped and counted as noise). One line per frame: its index, VALID or
INVALID (reason), and for valid frames the kind, sequence number, UTC time and the readings in words. A
sequence number seen earlier in the file is flagged INVALID (replay). Then one line per gap: sequence numbers
missing between the lowest and the highest of a meter's valid frames (frames deleted from the file, or never
received). A gap a restart explains is not missing: after a restart a meter resumes numbering at the next
multiple of meter.seqno.BLOCK (1024), so a gap that ends there, followed by a frame flagged ST_RESTORED or a
hello, holds numbers the meter never used (frames deleted just before a restart look the same: said in words).
The summary line counts valid and invalid frames, noise bytes and missing frames.

Exit status: 0 only for a complete, valid file: at least one frame, every frame valid, no noise (a damaged
frame is noise), no gap; 1 otherwise; `--allow-gaps` accepts gaps, `--allow-noise` accepts text between
frames (a serial capture); 2 usage errors (missing or unreadable file, unreadable key).
"""

from __future__ import annotations

from typing import Any

from meter import messages as M
from meter.frame import Deframer
from meter.seqno import BLOCK
from meterkit import wire as P
from meterkit.timefmt import utc_text
from meterkit.wire import records as R

READ_CHUNK = 64 * 1024
PPM = 1_000_000


def _fixed(v: int, decimals: int) -> str:
    """Integer v / 10^decimals as an exact decimal string (no float rounding)."""
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"


def register_name(key: int) -> str:
    """Words for an OBIS register key: 10800 -> '1.8.0 import', 20802 -> '2.8.2 export T2'."""
    code = M.obis_code(key)
    c, d, e = (int(x) for x in code.split("."))
    what = {(1, 8): "import", (2, 8): "export", (1, 6): "max demand import", (2, 6): "max demand export"}.get(
        (c, d), "register")
    return f"{code} {what}" + (f" T{e}" if e else "")


def _time_words(t: int, clock_set: bool) -> str:
    return utc_text(t) if clock_set else f"{t} s since boot (clock not set)"


def _hello(r: R.Hello, clock_set: bool) -> tuple[dict[str, Any], str]:
    info = {"firmware": r.firmware, "board": r.board, "boot_count": r.boot_count, "cycle_us": r.cycle_us,
            "shunt_duty_ppm": r.shunt_duty_ppm, "shunt_uohm": r.shunt_uohm, "checkpoint_wh": r.checkpoint_wh}
    return info, (f"firmware {r.firmware} on board {r.board}, boot #{r.boot_count}, conversion cycle {r.cycle_us} "
                  f"us, shunt duty {_fixed(r.shunt_duty_ppm, 4)} %, shunt {r.shunt_uohm} uOhm, checkpoint every "
                  f"{r.checkpoint_wh} Wh")


def _reading(r: R.Reading, clock_set: bool) -> tuple[dict[str, Any], str]:
    covered = _fixed(PPM - r.uncovered_ppm, 4)
    info = {"registers_wh": {M.obis_code(k): v for k, v in r.registers.items()}, "power_mw": r.power_mw,
            "voltage_mv": r.voltage_mv, "current_ma": r.current_ma, "uncovered_ppm": r.uncovered_ppm,
            "coverage_percent": covered}
    words = ", ".join(f"{register_name(k)} {v} Wh" for k, v in r.registers.items())
    flow = " (export)" if r.power_mw < 0 else ""
    words += (f"; power {_fixed(r.power_mw, 3)} W{flow}, voltage {_fixed(r.voltage_mv, 3)} V, current "
              f"{_fixed(r.current_ma, 3)} A; coverage {covered} %")
    return info, words


def _rows(rows: list[R.IntervalRow]) -> tuple[dict[str, Any], str]:
    out, parts = [], []
    for r in rows:
        flags = P.row_status_names(r.status)
        out.append({"end": r.end, "end_utc": utc_text(r.end), "import_mwh": r.import_mwh,
                    "export_mwh": r.export_mwh, "status": r.status, "flags": flags})
        parts.append(f"until {utc_text(r.end)}: import {_fixed(r.import_mwh, 3)} Wh, export "
                     f"{_fixed(r.export_mwh, 3)} Wh" + (f" [{', '.join(flags)}]" if flags else ""))
    period = rows[0].period_s
    return ({"period_s": period, "rows": out},
            f"load profile 99.1.0, {period} s period, {len(rows)} row(s): " + "; ".join(parts))


def _event(r: R.Event, clock_set: bool) -> tuple[dict[str, Any], str]:
    info = {"event_seq": r.event_seq, "code": r.code, "value": r.value, "at": r.time, "at_utc": utc_text(r.time)}
    return info, f"event #{r.event_seq} code {r.code} value {r.value!r} at {_time_words(r.time, clock_set)}"


def _billing(r: R.BillingSnapshot, clock_set: bool) -> tuple[dict[str, Any], str]:
    info: dict[str, Any] = {"period_end": r.period_end, "period_end_utc": utc_text(r.period_end),
                            "registers_wh": {M.obis_code(k): v for k, v in r.registers.items()}}
    words = f"billing period ending {_time_words(r.period_end, clock_set)}: " + ", ".join(
        f"{register_name(k)} {v} Wh" for k, v in r.registers.items())
    if r.max_demand:
        info["max_demand"] = {M.obis_code(k): {"w": w, "at": at, "at_utc": utc_text(at)}
                              for k, (w, at) in r.max_demand.items()}
        words += "; max demand " + ", ".join(f"{M.obis_code(k)} {w} W at {utc_text(at)}"
                                             for k, (w, at) in r.max_demand.items())
    return info, words


def _response(r: R.CommandResponse, clock_set: bool) -> tuple[dict[str, Any], str]:
    info = {"command": r.counter, "result": r.result, "reason": r.reason}
    words = f"answer to command {r.counter}: " + ("ok" if r.result == M.RESULT_OK else f"rejected ({r.result})")
    if r.reason is not None:
        words += f": {r.reason}"
    return info, words


_WORDS = {R.Hello: _hello, R.Reading: _reading, R.Event: _event, R.BillingSnapshot: _billing,
          R.CommandResponse: _response}


def describe(msg: P.Message) -> tuple[dict[str, Any], str]:
    """A verified meter message as (JSON-able readings, one line of words)."""
    recs = R.records_of(msg)
    if msg.kind == M.INTERVALS:
        return _rows(recs)
    return _WORDS[type(recs[0])](recs[0], not msg.status & M.ST_CLOCK_NOT_SET)


def verify_bytes(data: bytes, pub: Any, device: bytes | None = None) -> dict[str, Any]:
    """Check every frame of a byte stream; returns {'frames': [...], 'summary': {...}}."""

    def lookup(kid: bytes) -> Any:
        return pub if device is None or kid == device else None

    deframer = Deframer()
    frames: list[dict[str, Any]] = []
    seen: dict[tuple[bytes, int], int] = {}
    for pos in range(0, len(data), READ_CHUNK):
        for cose in deframer.feed(data[pos:pos + READ_CHUNK]):
            i = len(frames)
            entry: dict[str, Any] = {"index": i, "bytes": len(cose)}
            try:
                msg = P.verify_and_decode(cose, lookup)
                first = seen.get((msg.device_id, msg.seq))
                if first is not None:
                    same = " (an identical copy)" if frames[first]["cose"] == cose.hex() else ""
                    raise P.Replay(f"sequence number {msg.seq} already seen in frame #{first}{same}")
            except P.ProtocolError as e:
                entry.update(valid=False, reason=e.reason, error=str(e))
            else:
                seen[(msg.device_id, msg.seq)] = i
                info, words = describe(msg)
                clock_set = not msg.status & M.ST_CLOCK_NOT_SET
                entry.update(valid=True, kind=msg.kind_name, device=msg.device_id.hex(), seq=msg.seq,
                             time=msg.time, time_utc=utc_text(msg.time) if clock_set else None,
                             status=msg.status, status_flags=P.status_names(msg.status), readings=info,
                             words=words)
            entry["cose"] = cose.hex()
            frames.append(entry)
    deframer.feed(b"\x00")  # a trailing segment without its delimiter is noise too
    valid = sum(1 for f in frames if f["valid"])
    gaps = sequence_gaps(frames)
    summary = {"frames": len(frames), "valid": valid, "invalid": len(frames) - valid,
               "noise_bytes": deframer.noise, "noise_segments": deframer.noise_segments,
               "oversized_segments": deframer.oversized, "gaps": gaps,
               "missing": sum(g["missing"] for g in gaps if not g["restart"])}
    return {"frames": frames, "summary": summary}


def sequence_gaps(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of sequence numbers missing between each meter's valid frames, in order of device and seq."""
    by_device: dict[str, dict[int, dict[str, Any]]] = {}
    for f in frames:
        if f["valid"]:
            by_device.setdefault(f["device"], {})[f["seq"]] = f
    gaps = []
    for device, seqs in sorted(by_device.items()):
        order = sorted(seqs)
        for lo, hi in zip(order, order[1:], strict=False):
            if hi > lo + 1:
                after = seqs[hi]
                restart = hi % BLOCK == 0 and (after["kind"] == "hello" or after["status"] & M.ST_RESTORED != 0)
                gaps.append({"device": device, "first": lo + 1, "last": hi - 1, "missing": hi - lo - 1,
                             "restart": restart})
    return gaps


def format_frame(f: dict[str, Any]) -> str:
    if not f["valid"]:
        return f"#{f['index']:<4} INVALID ({f['reason']}): {f['error']}"
    when = f["time_utc"] or f"t={f['time']} s since boot"
    status = "" if not f["status_flags"] else f"  [status: {', '.join(f['status_flags'])}]"
    return f"#{f['index']:<4} VALID   {f['kind']:<9} seq {f['seq']:<8} {when}  {f['words']}{status}"


def format_gap(g: dict[str, Any]) -> str:
    seqs = f"seq {g['first']}" if g["first"] == g["last"] else f"seq {g['first']}..{g['last']}"
    if g["restart"]:
        return (f"skipped {seqs} of device {g['device']}: numbers a restart skips, never used (or frames "
                "deleted just before a restart)")
    return f"GAP     {seqs} of device {g['device']}: {g['missing']} frame(s) missing"


def format_summary(s: dict[str, Any]) -> str:
    line = f"{s['valid']} valid, {s['invalid']} invalid, {s['noise_bytes']} noise bytes"
    if s["noise_segments"]:
        line += f" (in {s['noise_segments']} segment(s) that were not frames: damaged data or text)"
    if s["missing"]:
        n = sum(1 for g in s["gaps"] if not g["restart"])
        line += f", {s['missing']} frame(s) missing in {n} gap(s)"
    return line
