"""`meterkit verify FILE --key PUBKEY [--json]`: the transparency tool.

Like the transparency software of OCMF/Eichrecht, it lets anybody holding a meter's public key check a file of
the meter's frames, without trusting the head-end that stored them: every frame is verified exactly as
received (COSE_Sign1, ES256, deterministic CBOR, the CDDL of docs/protocol.md) and shown in words.

FILE is a raw COBS byte stream, as written by `meterkit sim run --frames-out` (or captured from a serial
port: text between frames is skipped and counted as noise). One line per frame: its index, VALID or
INVALID (reason), and for valid frames the kind, sequence number, UTC time and the readings in words. A
sequence number seen earlier in the file is flagged INVALID (replay). The summary line counts valid and
invalid frames and noise bytes.

Exit status: 0 every frame valid (and at least one frame), 1 any invalid frame or none at all (or, with
--strict, any noise), 2 usage errors (missing or unreadable file, unreadable key).
"""

from __future__ import annotations

from typing import Any

from meter.frame import Deframer
from meterkit.timefmt import utc_text
from meterkit.wire import protocol as P

READ_CHUNK = 64 * 1024


def _fixed(v: int, decimals: int) -> str:
    """Integer v / 10^decimals as an exact decimal string (no float rounding)."""
    sign = "-" if v < 0 else ""
    q, r = divmod(abs(v), 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"


def register_name(key: int) -> str:
    """Words for an OBIS register key: 10800 -> '1.8.0 import', 20802 -> '2.8.2 export T2'."""
    code = P.obis_code(key)
    c, d, e = key // 10000, key // 100 % 100, key % 100
    what = {(1, 8): "import", (2, 8): "export", (1, 6): "max demand import", (2, 6): "max demand export"}.get(
        (c, d), "register")
    return f"{code} {what}" + (f" T{e}" if e else "")


def _time_words(t: int, clock_set: bool) -> str:
    return utc_text(t) if clock_set else f"{t} s since boot (clock not set)"


def describe(msg: P.Message) -> tuple[dict[str, Any], str]:
    """A verified meter message as (JSON-able readings, one line of words)."""
    b = msg.body
    clock_set = not msg.status & P.ST_CLOCK_NOT_SET
    if msg.kind == P.HELLO:
        info = {"firmware": b[6], "board": b[7], "boot_count": b[8], "cycle_us": b[9],
                "shunt_duty_ppm": b[10], "shunt_uohm": b[11], "checkpoint_wh": b[12]}
        words = (f"firmware {b[6]} on board {b[7]}, boot #{b[8]}, conversion cycle {b[9]} us, "
                 f"shunt duty {_fixed(b[10], 4)} %, shunt {b[11]} uOhm, checkpoint every {b[12]} Wh")
    elif msg.kind == P.READING:
        regs = b[P.K_REGISTERS]
        mw, mv, ma = b[P.K_INSTANT]
        ppm = b[P.K_UNCOVERED_PPM]
        info = {"registers_wh": {P.obis_code(k): v for k, v in regs.items()}, "power_mw": mw,
                "voltage_mv": mv, "current_ma": ma, "uncovered_ppm": ppm,
                "coverage_percent": _fixed(P.PPM - ppm, 4)}
        words = ", ".join(f"{register_name(k)} {v} Wh" for k, v in regs.items())
        flow = " (export)" if mw < 0 else ""
        words += (f"; power {_fixed(mw, 3)} W{flow}, voltage {_fixed(mv, 3)} V, current {_fixed(ma, 3)} A; "
                  f"coverage {_fixed(P.PPM - ppm, 4)} %")
    elif msg.kind == P.INTERVALS:
        rows = []
        parts = []
        for end, imp, exp, st in b[P.K_ROWS]:
            flags = P.row_status_names(st)
            rows.append({"end": end, "end_utc": utc_text(end), "import_mwh": imp, "export_mwh": exp,
                         "status": st, "flags": flags})
            parts.append(f"until {utc_text(end)}: import {_fixed(imp, 3)} Wh, export {_fixed(exp, 3)} Wh"
                         + (f" [{', '.join(flags)}]" if flags else ""))
        info = {"period_s": b[P.K_PERIOD], "rows": rows}
        words = f"load profile 99.1.0, {b[P.K_PERIOD]} s period, {len(rows)} row(s): " + "; ".join(parts)
    elif msg.kind == P.EVENT:
        info = {"event_seq": b[6], "code": b[7], "value": b[8], "at": b[9], "at_utc": utc_text(b[9])}
        words = f"event #{b[6]} code {b[7]} value {b[8]!r} at {_time_words(b[9], clock_set)}"
    elif msg.kind == P.BILLING:
        regs = b[P.K_BILLING_REGISTERS]
        info = {"period_end": b[6], "period_end_utc": utc_text(b[6]),
                "registers_wh": {P.obis_code(k): v for k, v in regs.items()}}
        words = f"billing period ending {_time_words(b[6], clock_set)}: " + ", ".join(
            f"{register_name(k)} {v} Wh" for k, v in regs.items())
        demand = b.get(P.K_MAX_DEMAND)
        if demand:
            info["max_demand"] = {P.obis_code(k): {"w": w, "at": at, "at_utc": utc_text(at)}
                                  for k, (w, at) in demand.items()}
            words += "; max demand " + ", ".join(f"{P.obis_code(k)} {w} W at {utc_text(at)}"
                                                 for k, (w, at) in demand.items())
    elif msg.kind == P.RESPONSE:
        info = {"command": b[6], "result": b[7], "reason": b.get(8)}
        words = f"answer to command {b[6]}: " + ("ok" if b[7] == 0 else f"rejected ({b[7]})")
        if 8 in b:
            words += f": {b[8]}"
    else:  # pragma: no cover - verify_and_decode only returns meter kinds
        info, words = {}, ""
    return info, words


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
                clock_set = not msg.status & P.ST_CLOCK_NOT_SET
                entry.update(valid=True, kind=msg.kind_name, device=msg.device_id.hex(), seq=msg.seq,
                             time=msg.time, time_utc=utc_text(msg.time) if clock_set else None,
                             status=msg.status, status_flags=P.status_names(msg.status), readings=info,
                             words=words)
            entry["cose"] = cose.hex()
            frames.append(entry)
    deframer.feed(b"\x00")  # a trailing segment without its delimiter is noise too
    valid = sum(1 for f in frames if f["valid"])
    summary = {"frames": len(frames), "valid": valid, "invalid": len(frames) - valid,
               "noise_bytes": deframer.noise, "noise_segments": deframer.noise_segments,
               "oversized_segments": deframer.oversized}
    return {"frames": frames, "summary": summary}


def format_frame(f: dict[str, Any]) -> str:
    if not f["valid"]:
        return f"#{f['index']:<4} INVALID ({f['reason']}): {f['error']}"
    when = f["time_utc"] or f"t={f['time']} s since boot"
    status = "" if not f["status_flags"] else f"  [status: {', '.join(f['status_flags'])}]"
    return f"#{f['index']:<4} VALID   {f['kind']:<9} seq {f['seq']:<8} {when}  {f['words']}{status}"


def format_summary(s: dict[str, Any]) -> str:
    line = f"{s['valid']} valid, {s['invalid']} invalid, {s['noise_bytes']} noise bytes"
    if s["noise_segments"]:
        line += f" (in {s['noise_segments']} segment(s) that were not frames: damaged data or text)"
    return line
