"""Table meter_keys: which head-end key each meter holds (its kid), so the concentrator signs its commands and
acknowledgements with that key; a key rotation's answer moves the meter to the new one (docs/security.md)."""

from __future__ import annotations

from meterkit.store.rows import kid_bytes
from meterkit.store.tables.base import Tables


class KeyTable(Tables):
    def meter_key(self, device_id: bytes) -> bytes | None:
        r = self._one("SELECT kid FROM meter_keys WHERE device = ?", (bytes(device_id),))
        return None if r is None else bytes(r[0])

    def meter_keys(self) -> dict[bytes, tuple[bytes, float]]:
        return {bytes(r[0]): (bytes(r[1]), r[2]) for r in self._rows("SELECT device, kid, since FROM meter_keys")}

    def set_meter_key(self, device_id: bytes, kid: bytes, since: float) -> None:
        self._execute("INSERT INTO meter_keys (device, kid, since) VALUES (?, ?, ?) ON CONFLICT (device) "
                      "DO UPDATE SET kid = excluded.kid, since = excluded.since",
                      (bytes(device_id), kid_bytes(kid), since))
