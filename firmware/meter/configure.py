# Ops 10-12 (docs/protocol.md, "Configuration, reboot, key rotation"): configuration, reboot, head-end key
# rotation. Loaded with the first of them (meter.commands), so a meter never sent one never holds this code.
# Every command here was verified by meter.link (signature under the head-end key in force, device, counter
# saved before it acts, expiry) and its argument types by meter.cmdschema.
#
# Configuration (meter.settings keeps and checks the values): the new values are stored first, then applied:
#   reading interval, alarm thresholds   at once
#   load-profile capture period          at the top of the next hour, the first instant that ends a row of
#                                        both periods: no row is cut short or stretched (the rows up to it
#                                        are not sent again by a profile command: their period was another)
#   demand period                        at the next billing-period end that ends a period of both lengths:
#                                        the maxima were just reset there, so none mixes two period lengths
#   keys other parts own                 their registered setters, at once
# Reboot: the answer goes into the durable outbox first; the meter restarts once the head-end acknowledged it
# (30 s at most), after writing the registers. Its counter was saved before it acted: a replay is refused.
# Key rotation: the new key replaces the old in one A/B write (meter.store): a power cut leaves one of them.
from meter import events, p256
from meter.identity import key_id
from meter.messages import (A_CAPTURE_PERIOD_S, A_CONTROL_MODE, A_DEMAND_PERIOD_S, A_GROUPS, A_KEY,
                            A_OVER_CURRENT_MA, A_OVER_VOLTAGE_MV, A_READING_S, OP_CONFIG, OP_REBOOT,
                            RESULT_BAD_ARGS, RESULT_OK, RESULT_REJECTED)

REBOOT_AFTER_S = 30  # a reboot waits this long (uptime s) at most for the head-end to acknowledge its answer


def handle(meter, counter, op, args):
    if op == OP_CONFIG:
        return _config(meter, counter, args)
    if op == OP_REBOOT:
        return _reboot(meter, counter)
    return _rotate(meter, counter, args)


def _config(meter, counter, args):
    respond = meter.reporter.response
    st = meter.settings
    if A_CONTROL_MODE in args or A_GROUPS in args:
        _control_setters(meter, st)
    bad = st.check(args)
    if bad is not None:
        return respond(counter, bad[0], bad[1])
    st.store(args)
    b = meter.boundaries
    rep = meter.reporter
    later = []
    if A_READING_S in args:
        rep.reading_every(args[A_READING_S])
    for k, name in ((A_OVER_CURRENT_MA, "over_current_ma"), (A_OVER_VOLTAGE_MV, "over_voltage_mv")):
        if k in args:
            meter.alarms.limits[name] = st.alarm_limit(k, None)
    p = args.get(A_CAPTURE_PERIOD_S)
    if p is not None and p != b.interval_s:
        b.capture_next = (p, lambda t: st.store({}, since=[t, p]))
        later.append("capture period at the top of the hour")
    elif p is not None:
        b.capture_next = None  # set back to the period in force before the switch came: nothing changes
        st.store({}, since=[st.capture_since(), p])  # (so the next boot sees no change either)
    p = args.get(A_DEMAND_PERIOD_S)
    if p is not None:
        b.settings["demand_period_s"] = p
        if p != b.demand.period_s:
            later.append("demand period at the next billing-period end")
    failed = st.apply_owned(args)
    meter.event(events.CONFIG_SET, ",".join([str(k) for k in sorted(args)]))
    if failed:  # checked, yet its owner could not keep it: said, not hidden
        return respond(counter, RESULT_REJECTED, ("rejected: %s (the other keys were applied)" % failed)[:120])
    return respond(counter, RESULT_OK, ("applied; " + ", ".join(later)) if later else None)


def _control_setters(meter, st):
    """Control mode and groups are meter.control's (IC70, the limiter): it keeps them; loaded when first set."""
    c = meter.controls()
    st.register(A_CONTROL_MODE, c.set_mode, c.disconnect.mode_problem)
    st.register(A_GROUPS, c.set_groups)  # (meter.cmdschema checked the ids already)


def _reboot(meter, counter):
    # the event and the answer (frames are numbered in the order made) go to the outbox before the restart
    meter.event(events.REBOOT, counter)
    answer = meter.reporter.response(counter, RESULT_OK, "restarting once this is acknowledged (%d s at most)"
                                     % REBOOT_AFTER_S)
    meter.restart_at(meter.hw.monotonic_s() + REBOOT_AFTER_S, answer[0])
    return answer


def _rotate(meter, counter, args):
    respond = meter.reporter.response
    ident = meter.identity
    key = args[A_KEY]
    if p256.decode_point(key) is None:
        return respond(counter, RESULT_BAD_ARGS, "bad arguments: %d is not a point on P-256" % A_KEY)
    if key == ident.headend_pub:
        return respond(counter, RESULT_REJECTED, "rejected: that key is already the head-end key")
    ident.install_headend(key)  # one A/B write: the old key or the new, never none
    meter.event(events.KEY_ROTATED, "".join(["%02x" % x for x in key_id(key)]))
    return respond(counter, RESULT_OK, None)
