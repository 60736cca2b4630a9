"""What has been published for each meter, and what to publish next (pure: records in, messages out).

The rules of issue 14:
- only the newest: a reading goes out only when its sequence number is above the last one published for its
  meter (a back-filled or resent older frame never becomes the current state); the frames of one batch go out
  in sequence order. Sequence numbers, not meter time, decide: they never repeat and grow across restarts,
  while a meter's clock may be set back.
- totals never decrease: each energy register is published as the largest value published so far; a reading
  with a smaller one (which a meter never makes: its registers survive power loss) keeps the old value, and is
  counted and logged.
- relay and status follow the meter's newest frame by sequence number: K_CONTROL of a reading, else the
  frame's status bits (meterkit.headend.control), so the relay is what the meter confirmed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from meter import messages as M
from meterkit.headend.control import state_of_status
from meterkit.integrations.mqtt import topics as T
from meterkit.integrations.mqtt.config import MqttConfig
from meterkit.wire.records import Frame, Hello, Reading

log = logging.getLogger(__name__)

Message = tuple[str, str]  # (topic, retained payload)


@dataclass
class MeterState:
    info: T.MeterInfo
    seq: int | None = None  # the newest reading published
    time: int | None = None  # ... its meter time (clock set), for every_s
    totals: dict[str, int] = field(default_factory=dict)  # register field -> largest Wh published
    frame_seq: int | None = None  # the newest frame whose status/relay is published
    status: int | None = None
    control: tuple[int, int, int] | None = None
    relay: tuple | None = None  # (state, control) last published
    status_sent: str | None = None  # the status payload last published
    hello_seq: int | None = None
    online: bool | None = None  # availability last published
    discovered: tuple | None = None  # (fields, info, commands) of the discovery configs published


class Tracker:
    def __init__(self, cfg: MqttConfig):
        self.cfg = cfg
        self.meters: dict[bytes, MeterState] = {}
        self.decreases_held = 0  # readings whose register was below one published (kept at the old value)
        self.stale_skipped = 0  # readings older than the one published (back-fill, resends)

    def meter(self, info: T.MeterInfo) -> MeterState:
        st = self.meters.get(info.device)
        if st is None:
            st = self.meters[info.device] = MeterState(info)
        return st

    def committed(self, frames: list[Frame], readings: list[Reading], hellos: list[Hello]) -> list[Message]:
        """What one committed batch changes, as messages in the order to publish them."""
        out: list[Message] = []
        for h in sorted(hellos, key=lambda h: h.seq):
            st = self.meters.get(h.device_id)
            if st is not None and (st.hello_seq is None or h.seq > st.hello_seq):
                st.hello_seq = h.seq
                st.info = T.MeterInfo(h.device_id, st.info.name, h.firmware, h.board)
        newest: dict[bytes, Frame] = {}
        for f in frames:
            if f.device_id in self.meters and (f.device_id not in newest or f.seq > newest[f.device_id].seq):
                newest[f.device_id] = f
        by_seq = {(r.device_id, r.seq): r for r in readings}
        for r in sorted(readings, key=lambda r: (r.device_id, r.seq)):
            st = self.meters.get(r.device_id)
            if st is not None:
                out += self._reading(st, r)
        for dev, f in newest.items():
            out += self._frame(self.meters[dev], f, by_seq.get((dev, f.seq)))
        touched = {h.device_id for h in hellos} | {r.device_id for r in readings} | newest.keys()
        configs: list[Message] = []
        for dev in touched:  # a new firmware (hello) or a new register: the configs again, before the states
            if dev in self.meters:
                configs += self.discover(self.meters[dev])
        return configs + out

    def discover(self, st: MeterState, force: bool = False) -> list[Message]:
        fields = tuple(sorted(set(st.totals) | {"import", "export"}, key=_field_order))
        commands = self.cfg.commands and st.info.device in self.cfg.allow
        key = (fields, st.info, commands)
        if st.discovered == key and not force:
            return []
        st.discovered = key
        return T.discovery(self.cfg, st.info, list(fields), commands)

    def _reading(self, st: MeterState, r: Reading) -> list[Message]:
        if st.seq is not None and r.seq <= st.seq:
            self.stale_skipped += 1
            return []
        clock_set = not r.status & M.ST_CLOCK_NOT_SET
        t = r.meter_time if clock_set else None
        every = self.cfg.every_s
        if every and st.time is not None and t is not None and t - st.time < every:
            return []  # privacy: not yet (a newer reading will go out)
        st.seq = r.seq
        if t is not None:
            st.time = t
        for key, wh in r.registers.items():
            name = T.register_field(key)
            if name is None or type(wh) is not int:
                continue
            held = st.totals.get(name)
            if held is not None and wh < held:
                self.decreases_held += 1
                log.warning("meter %s: register %s went from %d to %d Wh in frame %d: %d Wh published, not the "
                            "decrease", r.device_id.hex(), M.obis_code(key), held, wh, r.seq, held)
                continue
            st.totals[name] = wh
        instant = None if self.cfg.totals_only else T.instant_values(r.power_mw, r.voltage_mv, r.current_ma,
                                                                        r.demand, r.tariff)
        totals = {k: st.totals[k] for k in sorted(st.totals, key=_field_order)}
        return [(T.state_topic(self.cfg, r.device_id), T.state_payload(totals, r.seq, t, instant))]

    def _frame(self, st: MeterState, f: Frame, reading: Reading | None) -> list[Message]:
        if st.frame_seq is not None and f.seq <= st.frame_seq:
            return []
        st.frame_seq, st.status = f.seq, f.status
        if reading is not None:
            st.control = reading.control or (M.CONTROL_CONNECTED, 0, 0)
            state = st.control[0]
        else:
            state = state_of_status(f.status)
        out = []
        status = self.status(st)
        if status[1] != st.status_sent:  # sent when it changes (the frame that changed it named in the relay's)
            st.status_sent = status[1]
            out.append(status)
        if not self.cfg.totals_only and (state, st.control) != st.relay:
            st.relay = (state, st.control)
            out.append((T.relay_topic(self.cfg, st.info.device), T.relay_payload(state, f.seq, st.control)))
        return out

    def status(self, st: MeterState) -> Message:
        return (T.status_topic(self.cfg, st.info.device),
                T.status_payload(st.status, st.online is False, self.cfg.totals_only))

    def availability(self, st: MeterState, online: bool) -> list[Message]:
        """The meter's availability (and the outage flag) when it changes."""
        if st.online is online:
            return []
        st.online = online
        status = self.status(st)
        st.status_sent = status[1]
        return [(T.availability_topic(self.cfg, st.info.device), T.ONLINE if online else T.OFFLINE), status]


def _field_order(name: str) -> tuple[int, int]:
    direction, _, tariff = name.partition("_t")
    return (0 if direction == "import" else 1, int(tariff) if tariff else 0)
