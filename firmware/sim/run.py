# Run the real meter firmware against the simulated INA219 in virtual time (MicroPython Unix port).
#
#   micropython firmware/sim/run.py --board boards/unix-sim.json --scenario solar-day --hours 24 \
#       [--seed N] [--start UNIX_S] [--flash DIR] [--frames FILE] [--reading-s N] [--no-frames]
#       [--headend HEX65]   (install the head-end public key: commands and acks are verified against it)
#       [--firmware-key HEX65] (install the firmware-signing public key: update manifests are verified with it)
#       [--speed S]         (virtual time runs at most S times real time: a fleet shares one clock)
#       [--provision]       (first boot only: make the key, install --headend, print the identity, stop)
#       [--link tcp:HOST:PORT | tls:HOST:PORT | serial:PATH]  (send frames through the durable outbox and a real link)
#       [--tls-ca FILE --tls-name NAME [--tls-cert FILE --tls-key FILE]]  (with tls: the board's link.tls section,
#                            meter.tls: the head-end's CA pinned and its name; files relative to the flash directory)
#       [--drain-ms N]      (with --link: at the end, wait up to N ms of real time for the last acks)
#       [--clock-file PATH] (a fleet's clock, UTC seconds as text: stay within 120 s of it; print @@T lines)
#       [--calendar FILE] [--billing-day N] [--tariffs N] [--demand-period S]  (the board's 'tariff' section)
#       [--stall S:D]       (S seconds into the run the I2C bus hangs for D seconds: the watchdog resets the
#                            board when D exceeds its timeout; the run then ends as a restart, exit status 3;
#                            a reboot command ends it so too: "@@RESET command")
#       [--pace S]          (sleeps take real time / S, spent as an ESP32 would: the CPU-duty measurement)
#       [--busy-wait]       (the driver without sleep_ms: every wait busy, as before; for that measurement)
#       [--rtc unset] [--rtc-offset S] [--ntp]  (the board's clock: starts unset, or S seconds off; a time server)
#       [--rtc-jump AT:+S|AT:-S|AT:=T,...]  (AT virtual seconds into the run someone moves the RTC by S seconds or
#                            sets it to UTC second T, behind the meter's back: a clock set wrong, or corrected)
#       [--press S,S,...]   (the customer's button is pressed S virtual seconds into the run: sim.button_presses)
#       [--press-when-ready] (each press waits until the meter is ready for reconnection: sim.press_when_ready)
#       [--progress] [--trace] [--absent] [--log]
#
# --frames FILE writes every signed, framed message the meter sends (a COBS byte stream) to FILE; with a link,
# only once the outbox holds it (flushed: what a power cut leaves there was made durably).
#
# Prints "@@RESULT {json}" at the end (the host's `meterkit sim run` reads it). --progress prints
# "@@PROGRESS <virtual_s>" lines; --trace prints "@@BATCH <metered_uwh> <checkpointed_uwh>" after every batch
# (used by the power-loss test, which kills this process at random instants).
import binascii
import gc
import json
import sys
import time

from meter.app import Meter
from meter.board import load_board, validate_board
from sim.hardware import Restart, WatchdogReset, open_sim


def _args(argv):
    opts = {"board": "boards/unix-sim.json", "hours": "1", "flash": None, "scenario": None, "seed": None,
            "start": None, "frames": None, "reading-s": "60", "headend": None, "speed": None,
            "link": None, "drain-ms": "3000", "clock-file": None, "calendar": None, "billing-day": None,
            "tariffs": None, "demand-period": None, "stall": None, "pace": None, "rtc": None, "rtc-offset": None,
            "rtc-jump": None, "press": None, "firmware-key": None, "tls-ca": None, "tls-name": None,
            "tls-cert": None, "tls-key": None}
    flags = set()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--") and a[2:] in opts:
            opts[a[2:]] = argv[i + 1]
            i += 2
        elif a.startswith("--"):
            flags.add(a[2:])
            i += 1
        else:
            raise SystemExit("unexpected argument %r" % a)
    return opts, flags


FLEET_SLACK_S = 120


def _board(opts):
    """The board profile (a path, or a profile already loaded: sim.board's), its 'tariff' section overridden
    from the command line (validated again)."""
    board = opts["board"]
    board = load_board(board) if isinstance(board, str) else validate_board(board)
    tariff = dict(board.get("tariff") or {})
    for opt, key in (("calendar", "calendar"), ("billing-day", "billing_day"), ("tariffs", "tariffs"),
                     ("demand-period", "demand_period_s")):
        if opts[opt] is not None:
            tariff[key] = opts[opt] if opt == "calendar" else int(opts[opt])
    if tariff:
        board["tariff"] = tariff
        board = validate_board(board)
    return board


def _sim_overrides(opts, flags):
    out = {}
    if opts["scenario"]:
        out["scenario"] = opts["scenario"]
    if opts["seed"]:
        out["seed"] = int(opts["seed"])
    if opts["start"]:
        out["start_unix_s"] = int(opts["start"])
    if "absent" in flags:
        out["absent"] = True
    if opts["pace"]:
        out["pace"] = float(opts["pace"])
    out["busy_wait"] = "busy-wait" in flags
    out["watchdog_reset"] = True  # a stalled loop ends the run as the board's watchdog would restart it
    if opts["rtc"]:
        out["rtc"] = opts["rtc"]
    if opts["rtc-offset"]:
        out["rtc_offset_s"] = int(opts["rtc-offset"])
    if "ntp" in flags:
        out["ntp"] = True
    if opts["press"]:
        out["button_presses"] = [float(x) for x in opts["press"].split(",")]
    if "press-when-ready" in flags:
        out["press_when_ready"] = True
    return out


def _attach_link(meter, opts, frames_file, sink):
    from sim.transports import real_ticks_ms, transport  # only when linked: keeps the core run small

    timers = {}
    if opts["speed"]:
        # real-time link timers, but a simulated hour passes in seconds: wait for acks accordingly
        timers = {"ack_timeout_ms": 500, "ack_timeout_max_ms": 4000}
    tls = None
    if opts["tls-ca"] or opts["tls-name"]:  # the board profile's link.tls section (meter.tls)
        tls = {"ca": opts["tls-ca"], "server_name": opts["tls-name"]}
        if opts["tls-cert"] or opts["tls-key"]:
            tls.update(cert=opts["tls-cert"], key=opts["tls-key"])
    link = meter.attach_link(transport(opts["link"], tls, meter.hw.flash_dir), ticks_ms=real_ticks_ms, **timers)
    if frames_file is not None:
        to_link = meter.reporter.sink

        def tee(seq, fr):  # the frames file records what the meter made durably (the outbox holds it)
            held = to_link(seq, fr)
            if held:
                sink(seq, fr)
                frames_file.flush()  # a power cut (SIGKILL) must not take it with a buffer
            return held

        meter.reporter.sink = tee
    return link


class Pacer:
    """What happens after every batch: lock-step with a fleet's clock, the real-time throttle, heap peak,
    @@BATCH and @@PROGRESS lines. The link works while the runner waits (acks, back-fill, reconnects)."""

    def __init__(self, hw, link, opts, flags, end_us, duration_us):
        self.hw = hw
        self.clock = hw.sim.clock
        self.link = link
        self.clock_file = opts["clock-file"]
        self.speed = float(opts["speed"]) if opts["speed"] else 0.0
        self.trace = "trace" in flags
        self.progress = "progress" in flags
        self.start_us = end_us - duration_us
        self.duration_us = duration_us
        self.step_us = duration_us // 50 or 1
        self.next_progress = self.clock.now_us + self.step_us
        self.virtual0 = self.clock.now_us
        self.real0 = time.ticks_ms()
        self.batches = 0
        self.peak = gc.mem_alloc()
        self.jumps = _jumps(opts["rtc-jump"], self.start_us)

    def _jump(self):
        """Move the RTC as --rtc-jump says, once its instant has come (after a batch: the meter notices it at
        the next one, against its tick counter)."""
        at, sign, value = self.jumps.pop(0)
        clock = self.clock
        clock.set_time(value if sign == "=" else clock.time() + (value if sign == "+" else -value))
        print("@@JUMP %d %d" % (at, clock.time()))

    def _fleet_time(self):
        try:
            with open(self.clock_file) as f:
                return float(f.read() or 0)
        except (OSError, ValueError):
            return 0.0

    def _idle(self, meter, ms):
        if self.link is not None:
            meter.poll_link()
        time.sleep_ms(ms)

    def __call__(self, m):
        if self.clock_file:
            # never more than FLEET_SLACK_S ahead of the fleet clock (which follows the slowest meter), so
            # every meter and the head-end agree on the time within minutes
            self.batches += 1
            # the simulated world's time, not the board's clock (which may be unset or off)
            if self.batches % 4 == 0:
                print("@@T %d" % self.clock.world_time())
            while self.clock.world_time() > self._fleet_time() + FLEET_SLACK_S:
                for _ in range(10):
                    self._idle(m, 2)
        if self.speed:  # virtual time may run at most `speed` times real time
            ahead_ms = ((self.clock.now_us - self.virtual0) / (self.speed * 1000)
                        - time.ticks_diff(time.ticks_ms(), self.real0))
            while ahead_ms > 1:
                step = 2 if ahead_ms > 2 else ahead_ms
                self._idle(m, int(step))
                ahead_ms -= step
        while self.jumps and self.clock.now_us >= self.jumps[0][0]:
            self._jump()
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a
        if self.trace:
            print("@@BATCH %d %d" % (m.registers.total_uwh(), m.checkpointer.last_uwh))
        if self.progress and self.clock.now_us >= self.next_progress:
            self.next_progress += self.step_us
            print("@@PROGRESS %d %d" % (self.clock.now_us - self.start_us, self.duration_us))


def _jumps(spec, start_us):
    """--rtc-jump "AT:+S,AT:=T" -> [(virtual µs, sign, value)], in order; SystemExit for a bad one."""
    out = []
    for part in (spec or "").split(","):
        if not part:
            continue
        at, _, move = part.partition(":")
        try:
            if move[:1] not in ("+", "-", "="):
                raise ValueError(move)
            out.append((start_us + int(float(at) * 1000000), move[0], int(move[1:])))
        except ValueError:
            raise SystemExit("--rtc-jump wants AT:+S, AT:-S or AT:=T, not %r" % part)
    out.sort()
    return out


def _drain(meter, link, ms):
    """The run is over: give the head-end a moment (real time) to acknowledge the last frames."""
    until = time.ticks_add(time.ticks_ms(), ms)
    while link.outbox.acked < link.outbox.last_seq and time.ticks_diff(until, time.ticks_ms()) > 0:
        meter.poll_link()
        time.sleep_ms(2)
    link.flush()


def _identity(meter):
    ident = meter.identity
    return {"device_id": binascii.hexlify(ident.device_id).decode(),
            "public_key": binascii.hexlify(ident.public_key).decode()}


def _result(meter, hw, hours, restored, heap, wall_ms):
    """The run's figures. The energy is this run's: what the registers gained since they were restored."""
    chip = hw.sim.chip
    metro = meter.metrology
    regs = meter.registers
    gc.collect()
    result = {
        "scenario": hw.sim.scenario.name, "hours": hours,
        "exact_import_uwh": chip.exact_import_uwh, "exact_export_uwh": chip.exact_export_uwh,
        "metered_import_uwh": regs.total_uwh("import") - restored[1],
        "metered_export_uwh": regs.total_uwh("export") - restored[2],
        "restored_uwh": restored[0], "registers": regs.snapshot(),
        "samples": metro.samples, "chip_cycles": chip.cycles, "missed": metro.missed,
        "covered_us": metro.covered_us, "elapsed_us": metro.elapsed_us, "coverage_ppm": metro.coverage_ppm(),
        "shunt_duty_ppm": meter.sensor.shunt_duty_ppm, "i2c_errors": meter.sensor.errors,
        "chip_resets": meter.sensor.resets, "overflows": meter.sensor.overflows,
        "flash_writes": meter.store.writes, "flash_bytes": meter.store.bytes_written,
        "events": meter.event_counts, "watchdog_longest_ms": hw.watchdog.longest_ms,
        "control": [meter.control.disconnect.state, meter.control.disconnect.mode] if meter.control else [1, 0],
        "busy_us": hw.sim.clock.busy_us, "idle_us": hw.sim.clock.idle_us, "clock_set": meter.boundaries.clock_ok,
        "clock_off_s": hw.time() - hw.sim.clock.world_time(), "heap_peak": heap[1], "heap_after_gc": gc.mem_alloc(),
        "heap_before_meter": heap[0], "heap_total": gc.mem_alloc() + gc.mem_free(), "wall_ms": wall_ms,
    }
    if meter.reporter is not None:
        result.update(_identity(meter))
        result["frames"] = meter.reporter.frames
        hid = meter.identity.headend_id
        result["headend_id"] = binascii.hexlify(hid).decode() if hid else None
    return result


def _run(meter, hw, end_us, pacer, stall, frames_file):
    """Start the meter and run it to end_us; a watchdog reset (--stall) ends the process as a restart."""
    clock = hw.sim.clock
    if stall:
        at, _, dur = stall.partition(":")
        hw.sim.bus.stall_at(clock.now_us + int(float(at) * 1000000), int(float(dur) * 1000000))
    meter.start()
    try:
        meter.run_until(lambda: clock.now_us >= end_us, pacer)
    except (WatchdogReset, Restart) as e:
        # flash holds what the meter had stored; the next run boots from it
        print("@@RESET %s: %s" % ("watchdog" if isinstance(e, WatchdogReset) else "command", e))
        if frames_file is not None:
            frames_file.close()
        sys.exit(3)


def main(argv, board=None):
    opts, flags = _args(argv)
    if board is not None:
        opts["board"] = board
    hw = open_sim(_board(opts), flash_dir=opts["flash"], overrides=_sim_overrides(opts, flags))
    gc.collect()
    heap_before_meter = gc.mem_alloc()  # the runner and the simulated hardware: not part of a board's budget
    clock = hw.sim.clock
    duration_us = int(float(opts["hours"]) * 3600 * 1000000)
    end_us = clock.now_us + duration_us
    frames_file = open(opts["frames"], "ab") if opts["frames"] else None  # appended: a restart adds to it
    frame_bytes = [0]

    def sink(seq, frame):
        frame_bytes[0] += len(frame)
        if frames_file is not None:
            frames_file.write(frame)

    meter = Meter(hw, log=(lambda m: print("log:", m)) if "log" in flags else None,
                  sink=None if "no-frames" in flags else sink, reading_s=int(opts["reading-s"]))
    if hw.button is not None and hw.button.when_ready:
        from meter.disconnect import CONTROL_READY

        hw.button.ready = lambda: meter.control is not None and meter.control.disconnect.state == CONTROL_READY
    if opts["headend"] and meter.reporter is not None:
        meter.identity.install_headend(binascii.unhexlify(opts["headend"]))  # provisioning, as on a bench
    if opts["firmware-key"]:
        from meter.fwupdate import install_key  # the firmware-signing key (docs/firmware-updates.md)

        install_key(hw.flash_dir, binascii.unhexlify(opts["firmware-key"]))
    link = None
    if opts["link"] and meter.reporter is not None:
        link = _attach_link(meter, opts, frames_file, sink)
    if "provision" in flags:
        # Provisioning: the meter made its key (first boot) and holds the head-end key; say who it is, stop.
        ident = _identity(meter)
        ident["created"] = meter.identity.created
        print("@@RESULT " + json.dumps(ident))
        return
    regs = meter.registers
    restored = (regs.total_uwh(), regs.total_uwh("import"), regs.total_uwh("export"))
    if "trace" in flags:
        print("@@RESTORED %d" % restored[0])
    pacer = Pacer(hw, link, opts, flags, end_us, duration_us)
    t0 = time.ticks_ms()
    _run(meter, hw, end_us, pacer, opts["stall"], frames_file)
    meter.flush_checkpoint()
    if link is not None:
        _drain(meter, link, int(opts["drain-ms"]))
    wall_ms = time.ticks_diff(time.ticks_ms(), t0)
    if frames_file is not None:
        frames_file.close()
    result = _result(meter, hw, float(opts["hours"]), restored, (heap_before_meter, pacer.peak), wall_ms)
    if meter.reporter is not None:
        result["frame_bytes"] = frame_bytes[0]
    if link is not None:
        result["link"] = link.stats()
        result["outbox_held"] = link.outbox.held
        t = link.transport
        if hasattr(t, "handshakes"):  # TLS (meter.transport.TLSTransport)
            result["tls"] = {"handshakes": t.handshakes, "failures": t.tls_failures, "handshake_ms": t.handshake_ms,
                             "last_error": t.last_error}
    gc.collect()
    sys.stdout.write("@@RESULT ")
    json.dump(result, sys.stdout)  # streamed: one big string may not fit a fragmented, capped heap
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
