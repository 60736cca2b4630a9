"""What `meterkit alerts` shows: the alerts table as rows (JSON) and as a text table, filtered by meter, lowest
severity and state; and acknowledging one (docs/alerts.md)."""

from __future__ import annotations

from meterkit.headend.texttable import text_table
from meterkit.store.api import ALERT_STATES, SEVERITIES, Store
from meterkit.timefmt import utc_text


def at_least(severity: str | None) -> list[str] | None:
    """The severities at or above `severity` (None: all)."""
    if severity is None:
        return None
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r}: one of {', '.join(SEVERITIES)}")
    return list(SEVERITIES[SEVERITIES.index(severity):])


def alert_rows(store: Store, device: bytes | None = None, severity: str | None = None,
               state: str | None = "open") -> list[dict]:
    """The alerts (of a meter, of at least a severity, in a state: 'open', 'acknowledged', None for both), oldest
    first, as `meterkit alerts --json` prints them."""
    if state is not None and state not in ALERT_STATES:
        raise ValueError(f"state {state!r}: one of {', '.join(ALERT_STATES)}, or all")
    names = {m.device_id: m.name for m in store.meters()}
    return [{"id": a.id, "rule": a.rule, "severity": a.severity, "device": a.device_id.hex() or None,
             "meter": names.get(a.device_id), "source": a.source or None, "state": a.state, "count": a.count,
             "first_at": a.first_at, "first_utc": utc_text(a.first_at), "last_at": a.last_at,
             "last_utc": utc_text(a.last_at), "detail": a.detail, "acked_at": a.acked_at, "acked_by": a.acked_by}
            for a in store.alerts(device, at_least(severity), None if state is None else [state])]


def format_alerts(rows: list[dict]) -> str:
    if not rows:
        return "no alerts"
    head = ("#", "severity", "rule", "meter / source", "count", "first (UTC)", "last (UTC)", "state", "detail")
    body = [(str(r["id"]), r["severity"], r["rule"],
             " ".join(x for x in (r["meter"] or r["device"] or "", f"from {r['source']}" if r["source"] else "") if x),
             str(r["count"]), r["first_utc"], r["last_utc"],
             r["state"] + (f" by {r['acked_by']}" if r["acked_by"] else ""), r["detail"] or "") for r in rows]
    return text_table(head, body, right={0, 4})


def acknowledge(store: Store, ids: list[int], by: str, at: float) -> list[int]:
    """Acknowledge these open alerts (one transaction, committed); the ids that were not open alerts."""
    missing = [i for i in ids if not store.ack_alert(i, by, at)]
    store.commit()
    return missing
