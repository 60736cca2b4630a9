"""Replay protection for meter frames: per device sequence numbers in bounded memory."""

from __future__ import annotations

from meterkit.wire.errors import Replay, Stale


class ReplayGuard:
    """Refuses a meter's frame sequence number that was already accepted, in bounded memory per device.

    Per device: the high-water mark H (largest sequence number accepted) and a bitmap of the `window` numbers
    H, H-1, ..., H-window+1 (bit i set = H-i accepted). The rule for a sequence number s:

    - s > H: new; accepted, H becomes s (the bitmap shifts; numbers that fall out of it are forgotten);
    - H - window < s <= H: accepted once, refused as Replay when its bit is already set;
    - s <= H - window: refused as Stale (a subclass of Replay): too old to tell. A meter resends
      unacknowledged frames oldest first, so this only happens after `window` newer frames arrived first;
      a head-end with a store may look such a number up there instead of dropping it.

    check() raises without changing anything; record() marks a number accepted (call it once the frame is
    stored); admit() is both. Memory: one int of `window` bits per device (512 bytes for the default 4096).
    """

    def __init__(self, window: int = 4096):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._mask = (1 << window) - 1
        self._state: dict[bytes, list[int]] = {}  # device -> [H, bitmap]

    def high(self, device_id: bytes) -> int | None:
        st = self._state.get(bytes(device_id))
        return st[0] if st else None

    def seen(self, device_id: bytes, seq: int) -> bool:
        st = self._state.get(bytes(device_id))
        if st is None or seq > st[0]:
            return False
        d = st[0] - seq
        return d >= self.window or bool(st[1] >> d & 1)

    def check(self, device_id: bytes, seq: int) -> None:
        st = self._state.get(bytes(device_id))
        if st is None or seq > st[0]:
            return
        d = st[0] - seq
        if d >= self.window:
            raise Stale(f"sequence number {seq} is {d} below the newest ({st[0]}), outside the replay window "
                        f"of {self.window}")
        if st[1] >> d & 1:
            raise Replay(f"sequence number {seq} already accepted from {bytes(device_id).hex()}")

    def record(self, device_id: bytes, seq: int) -> None:
        key = bytes(device_id)
        st = self._state.get(key)
        if st is None:
            self._state[key] = [seq, 1]
            return
        if seq > st[0]:
            shift = seq - st[0]
            st[1] = ((st[1] << shift) | 1) & self._mask if shift < self.window else 1
            st[0] = seq
        else:
            d = st[0] - seq
            if d < self.window:
                st[1] |= 1 << d

    def admit(self, device_id: bytes, seq: int) -> None:
        """check() then record()."""
        self.check(device_id, seq)
        self.record(device_id, seq)

    def __len__(self) -> int:
        return len(self._state)
