"""What a bill is made from, read through the store: signed billing snapshots (re-verified with the meter's
key), the commissioning hello, load-profile rows."""

from __future__ import annotations

from dataclasses import dataclass

from meter import messages as mmsg
from meterkit import wire as P
from meterkit.billing.errors import BillingError
from meterkit.store.api import Store


@dataclass
class Snapshot:
    """A billing snapshot (kind 5) as signed by the meter: period end, registers and maximum demands."""

    seq: int
    period_end: int
    registers: dict[int, int]  # OBIS key -> Wh
    max_demand: dict[int, tuple[int, int]]  # OBIS key -> (W, UTC time)
    verified: bool = False

    def tariff_registers(self, c: int) -> dict[int, int]:
        """{tariff: Wh} of direction c (1 import, 2 export). A single-tariff meter sends no tariff registers:
        tariff 1 is the total then."""
        base = mmsg.OBIS_IMPORT if c == 1 else mmsg.OBIS_EXPORT  # c.8.0; c.8.t = base + t
        regs = {k - base: v for k, v in self.registers.items() if base < k <= base + 99}
        if not regs:
            return {1: self.registers.get(base, 0)}
        if sum(regs.values()) != self.registers.get(base, 0):
            raise BillingError(f"billing snapshot seq {self.seq}: tariff registers {c}.8.t sum to "
                               f"{sum(regs.values())} Wh, not the total {c}.8.0 = {self.registers.get(base)} Wh")
        return regs

    def demand(self, key: int) -> tuple[int, int] | None:
        v = self.max_demand.get(key)
        if v is None and key == mmsg.OBIS_MAX_DEMAND:
            tar = [x for k, x in self.max_demand.items() if mmsg.OBIS_MAX_DEMAND < k <= mmsg.OBIS_MAX_DEMAND + 99]
            if tar:
                v = max(tar, key=lambda x: (x[0], -x[1]))
        return v


def stored_snapshots(store: Store, dev: bytes) -> list[Snapshot]:
    out = [Snapshot(b.seq, b.period_end, dict(b.registers), dict(b.max_demand)) for b in store.billing_snapshots(dev)]
    out.sort(key=lambda s: (s.period_end, s.seq))
    return out


def verified(store: Store, dev: bytes, snap: Snapshot) -> Snapshot:
    """The snapshot as its signed frame says (the stored evidence, verified again with the meter's key)."""
    rec = store.meter(dev)
    raw = store.frame_raw(dev, snap.seq)
    if rec is None or raw is None:
        raise BillingError(f"billing snapshot seq {snap.seq}: its signed frame is not in the database")
    pub = P.public_from_bytes(rec.public_key)
    try:
        m = P.verify_and_decode(raw, lambda kid: pub if kid == dev else None)
    except P.ProtocolError as e:
        raise BillingError(f"billing snapshot seq {snap.seq}: the stored frame does not verify ({e}); "
                           "not billing from it") from None
    if m.kind != mmsg.BILLING or m.seq != snap.seq:
        raise BillingError(f"billing snapshot seq {snap.seq}: the stored frame is a {m.kind_name} frame")
    md = m.body.get(mmsg.K_MAX_DEMAND) or {}
    return Snapshot(m.seq, m.body[mmsg.K_PERIOD_END], dict(m.body[mmsg.K_BILLING_REGISTERS]),
                    {k: (v[0], v[1]) for k, v in md.items()}, True)


@dataclass
class Commissioning:
    """The meter started from empty registers inside the period: its first stored frame is such a hello."""

    seq: int
    time: int


def commissioning(store: Store, dev: bytes, start: int, end: int) -> Commissioning | None:
    first = store.frames_after(dev, -1, limit=1)
    if not first:
        return None
    f = first[0]
    if (f.kind != mmsg.HELLO or (f.status or 0) & (mmsg.ST_RESTORED | mmsg.ST_CLOCK_NOT_SET)
            or not start <= f.meter_time < end):
        return None
    return Commissioning(f.seq, f.meter_time)


@dataclass(frozen=True)
class Row:
    end: int
    import_mwh: int
    export_mwh: int
    status: int
    period_s: int


def profile_rows(store: Store, dev: bytes) -> list[Row]:
    out = []
    for x in store.interval_rows(dev):
        if x.import_mwh is None or x.export_mwh is None:
            continue  # beyond what the store keeps (signed 64 bits): not a meter of this world
        out.append(Row(x.end, x.import_mwh, x.export_mwh, x.status or 0, x.period_s or 0))
    return out
