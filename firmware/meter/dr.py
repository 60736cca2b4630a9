# Demand response on the meter (docs/protocol.md, "Two-way control on the meter"): one event at a time, from
# OP_DR_EVENT {id, start, duration, limit_w?, shed?}. Accepted (DR_ACCEPTED) and stored; at its start DR_START:
# the limiter's threshold in force becomes min(its own, limit_w) and/or the load-control output opens (shed);
# at its end DR_END and both are lifted. The customer's button during the event is an override: DR_OPT_OUT,
# and the event's limit and shed are lifted for this meter. A newer event replaces a pending one; an event in
# force is not replaced (it ends first). The event lives in an A/B store ("dr"): a power cut inside the window
# resumes it at boot, without a second DR_START.
import struct

from meter import events
from meter.messages import A_DR_ID, A_DURATION_S, A_LIMIT_W, A_SHED, A_START, RESULT_BAD_ARGS, RESULT_REJECTED
from meter.store import Store

_FMT = "<IIIIBB"  # id, start, duration, limit W (0: none), shed, phase
PENDING = 0
ACTIVE = 1
OPTED_OUT = 2  # in its window, lifted by the customer's button


class DemandResponse:
    """limiter(): the meter's Limiter (made when first needed); load_control: meter.hal.Output or None;
    event(code, value) logs an event."""

    def __init__(self, flash_dir, limiter, load_control, event):
        self.limiter = limiter
        self.load_control = load_control
        self.event = event
        self.current = None  # [id, start, duration, limit_w, shed, phase] or None
        self.store = Store(flash_dir, "dr", max_payload=32)
        loaded = self.store.load()
        if loaded is not None and loaded[1]:
            try:
                self.current = list(struct.unpack(_FMT, loaded[1]))
            except ValueError as e:
                event(events.STORE_CORRUPT, "dr: %s" % e)
        c = self.current
        if c is not None and c[5] == ACTIVE:
            self._apply(c)  # resumed after a restart inside the window

    @property
    def active(self):
        c = self.current
        return c is not None and c[5] == ACTIVE

    def accept(self, args, now):
        """OP_DR_EVENT at UTC `now` -> None (accepted), or (RESULT_*, reason) and nothing changed."""
        eid, start, dur = args[A_DR_ID], args[A_START], args[A_DURATION_S]
        limit, shed = args.get(A_LIMIT_W, 0), args.get(A_SHED, False)
        if not dur:
            return RESULT_BAD_ARGS, "bad arguments: duration 0"
        if A_LIMIT_W in args and not limit:
            return RESULT_BAD_ARGS, "bad arguments: limit_w 0 (shed opens the load-control output)"
        if not limit and not shed:
            return RESULT_BAD_ARGS, "bad arguments: neither limit_w nor shed"
        if start + dur > 0xFFFFFFFF:
            return RESULT_BAD_ARGS, "bad arguments: the event ends after 2106"
        if start + dur <= now:
            return RESULT_REJECTED, "rejected: the event ended already (at %d)" % (start + dur)
        if shed and self.load_control is None:
            return RESULT_REJECTED, "rejected: this meter has no load-control output to shed"
        c = self.current
        if c is not None and c[5] != PENDING:
            return RESULT_REJECTED, "rejected: event %d is in force until %d" % (c[0], c[1] + c[2])
        if limit:
            self.limiter()  # made (and its store read) now: a later failure is not a half-accepted event
        self._save([eid, start, dur, limit, 1 if shed else 0, PENDING])
        self.event(events.DR_ACCEPTED, eid)
        return None

    def _save(self, c):
        self.store.save(struct.pack(_FMT, *c))
        self.current = c

    def _apply(self, c):
        if c[3]:
            self.limiter().dr_limit = c[3]
        if c[4] and self.load_control is not None:
            self.load_control.value(0)

    def _lift(self):
        if self.current[3]:
            self.limiter().dr_limit = 0
        if self.load_control is not None:
            self.load_control.value(1)

    def check(self, now):
        """Once per batch; now: UTC s, or None while the clock is not set (the event waits)."""
        c = self.current
        if c is None or now is None:
            return
        end = c[1] + c[2]
        if c[5] == PENDING and c[1] <= now < end:
            c = c[:5] + [ACTIVE]
            self._save(c)
            self._apply(c)
            self.event(events.DR_START, c[0])
        elif now >= end:
            if c[5] == ACTIVE:
                self._lift()
            self.store.save(b"")
            self.current = None
            self.event(events.DR_END, c[0])

    def opt_out(self):
        """The customer's button: True when it overrode the event in force (then lifted for this meter)."""
        c = self.current
        if c is None or c[5] != ACTIVE:
            return False
        self._save(c[:5] + [OPTED_OUT])
        self._lift()
        self.event(events.DR_OPT_OUT, c[0])
        return True
