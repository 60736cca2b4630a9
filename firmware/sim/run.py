# Run the real meter firmware against the simulated INA219 in virtual time (MicroPython Unix port).
#
#   micropython firmware/sim/run.py --board boards/unix-sim.json --scenario solar-day --hours 24 \
#       [--seed N] [--start UNIX_S] [--flash DIR] [--frames FILE] [--reading-s N] [--no-frames]
#       [--headend HEX65]   (install the head-end public key: commands and acks are verified against it)
#       [--speed S]         (virtual time runs at most S times real time: a fleet shares one clock)
#       [--provision]       (first boot only: make the key, install --headend, print the identity, stop)
#       [--link tcp:HOST:PORT | serial:PATH]  (send frames through the durable outbox and a real link)
#       [--drain-ms N]      (with --link: at the end, wait up to N ms of real time for the last acks)
#       [--clock-file PATH] (a fleet's clock, UTC seconds as text: stay within 120 s of it; print @@T lines)
#       [--calendar FILE] [--billing-day N] [--tariffs N] [--demand-period S]  (the board's 'tariff' section)
#       [--progress] [--trace] [--absent] [--log]
#
# --frames FILE writes every signed, framed message the meter sends (a COBS byte stream) to FILE.
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
from sim.hardware import open_sim


def _args(argv):
    opts = {"board": "boards/unix-sim.json", "hours": "1", "flash": None, "scenario": None, "seed": None,
            "start": None, "frames": None, "reading-s": "60", "headend": None, "speed": None,
            "link": None, "drain-ms": "3000", "clock-file": None, "calendar": None, "billing-day": None,
            "tariffs": None, "demand-period": None}
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


def main(argv):
    opts, flags = _args(argv)
    board = load_board(opts["board"])
    tariff = dict(board.get("tariff") or {})
    for opt, key in (("calendar", "calendar"), ("billing-day", "billing_day"), ("tariffs", "tariffs"),
                     ("demand-period", "demand_period_s")):
        if opts[opt] is not None:
            tariff[key] = opts[opt] if opt == "calendar" else int(opts[opt])
    if tariff:
        board["tariff"] = tariff
        board = validate_board(board)
    overrides = {}
    if opts["scenario"]:
        overrides["scenario"] = opts["scenario"]
    if opts["seed"]:
        overrides["seed"] = int(opts["seed"])
    if opts["start"]:
        overrides["start_unix_s"] = int(opts["start"])
    if "absent" in flags:
        overrides["absent"] = True
    hw = open_sim(board, flash_dir=opts["flash"], overrides=overrides)
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
    if opts["headend"] and meter.reporter is not None:
        meter.identity.install_headend(binascii.unhexlify(opts["headend"]))  # provisioning, as on a bench
    link = None
    if opts["link"] and meter.reporter is not None:
        from sim.transports import real_ticks_ms, transport  # only when linked: keeps the core run small

        timers = {}
        if opts["speed"]:
            # real-time link timers, but a simulated hour passes in seconds: wait for acks accordingly
            timers = {"ack_timeout_ms": 500, "ack_timeout_max_ms": 4000}
        link = meter.attach_link(transport(opts["link"]), ticks_ms=real_ticks_ms, **timers)
        if frames_file is not None:
            to_link = meter.reporter.sink

            def tee(seq, fr):  # the frames file records what the meter produced; the link carries it
                sink(seq, fr)
                return to_link(seq, fr)

            meter.reporter.sink = tee
    if "provision" in flags:
        # Provisioning: the meter made its key (first boot) and holds the head-end key; say who it is, stop.
        print("@@RESULT " + json.dumps({
            "device_id": binascii.hexlify(meter.identity.device_id).decode(),
            "public_key": binascii.hexlify(meter.identity.public_key).decode(),
            "created": meter.identity.created}))
        return
    restored_uwh = meter.registers.total_uwh()
    restored_imp = meter.registers.total_uwh("import")
    restored_exp = meter.registers.total_uwh("export")
    if "trace" in flags:
        print("@@RESTORED %d" % restored_uwh)
    peak = [gc.mem_alloc()]
    progress_step = duration_us // 50 or 1
    next_progress = [clock.now_us + progress_step]
    trace = "trace" in flags
    progress = "progress" in flags

    speed = float(opts["speed"]) if opts["speed"] else 0.0
    virtual0 = clock.now_us
    real0 = time.ticks_ms()

    batches = [0]
    clock_file = opts["clock-file"]

    def fleet_time():
        try:
            with open(clock_file) as f:
                return float(f.read() or 0)
        except (OSError, ValueError):
            return 0.0

    def on_batch(m):
        if clock_file:
            # Lock-step with a fleet: never more than FLEET_SLACK_S ahead of the fleet clock (which follows
            # the slowest meter), so every meter and the head-end agree on the time within minutes.
            batches[0] += 1
            if batches[0] % 4 == 0:
                print("@@T %d" % hw.time())
            while hw.time() > fleet_time() + FLEET_SLACK_S:
                for _ in range(10):
                    if link is not None:
                        m.poll_link()
                    time.sleep_ms(2)
        if speed:
            # Throttle: virtual time may run at most `speed` times real time.
            ahead_ms = (clock.now_us - virtual0) / (speed * 1000) - time.ticks_diff(time.ticks_ms(), real0)
            while ahead_ms > 1:  # idle in real time: the link works meanwhile (acks, back-fill, reconnects)
                if link is not None:
                    m.poll_link()
                step = 2 if ahead_ms > 2 else ahead_ms
                time.sleep_ms(int(step))
                ahead_ms -= step
        a = gc.mem_alloc()
        if a > peak[0]:
            peak[0] = a
        if trace:
            print("@@BATCH %d %d" % (m.registers.total_uwh(), m.checkpointer.last_uwh))
        if progress and clock.now_us >= next_progress[0]:
            next_progress[0] += progress_step
            print("@@PROGRESS %d %d" % (clock.now_us - (end_us - duration_us), duration_us))

    t0 = time.ticks_ms()
    meter.start()
    meter.run_until(lambda: clock.now_us >= end_us, on_batch)
    meter.flush_checkpoint()
    if link is not None:
        drain_until = time.ticks_add(time.ticks_ms(), int(opts["drain-ms"]))
        while link.outbox.acked < link.outbox.last_seq and time.ticks_diff(drain_until, time.ticks_ms()) > 0:
            meter.poll_link()  # the run is over: give the head-end a moment to acknowledge the last frames
            time.sleep_ms(2)
        link.flush()
    wall_ms = time.ticks_diff(time.ticks_ms(), t0)
    if frames_file is not None:
        frames_file.close()

    chip = hw.sim.chip
    metro = meter.metrology
    regs = meter.registers
    # This run's energy: what the registers gained since they were restored from flash.
    imp_uwh = regs.total_uwh("import") - restored_imp
    exp_uwh = regs.total_uwh("export") - restored_exp
    gc.collect()
    result = {
        "scenario": hw.sim.scenario.name,
        "hours": float(opts["hours"]),
        "exact_import_uwh": chip.exact_import_uwh,
        "exact_export_uwh": chip.exact_export_uwh,
        "metered_import_uwh": imp_uwh,
        "metered_export_uwh": exp_uwh,
        "restored_uwh": restored_uwh,
        "registers": regs.snapshot(),
        "samples": metro.samples,
        "chip_cycles": chip.cycles,
        "missed": metro.missed,
        "covered_us": metro.covered_us,
        "elapsed_us": metro.elapsed_us,
        "coverage_ppm": metro.coverage_ppm(),
        "shunt_duty_ppm": meter.sensor.shunt_duty_ppm,
        "i2c_errors": meter.sensor.errors,
        "chip_resets": meter.sensor.resets,
        "overflows": meter.sensor.overflows,
        "flash_writes": meter.store.writes,
        "flash_bytes": meter.store.bytes_written,
        "events": meter.event_counts,
        "heap_peak": peak[0],
        "heap_after_gc": gc.mem_alloc(),
        "heap_before_meter": heap_before_meter,
        "heap_total": gc.mem_alloc() + gc.mem_free(),
        "wall_ms": wall_ms,
    }
    if meter.reporter is not None:
        result["device_id"] = binascii.hexlify(meter.identity.device_id).decode()
        result["public_key"] = binascii.hexlify(meter.identity.public_key).decode()
        result["frames"] = meter.reporter.frames
        result["frame_bytes"] = frame_bytes[0]
        result["headend_id"] = binascii.hexlify(meter.identity.headend_id).decode() \
            if meter.identity.headend_id else None
    if link is not None:
        result["link"] = link.stats()
        result["outbox_held"] = link.outbox.held
    gc.collect()
    sys.stdout.write("@@RESULT ")
    json.dump(result, sys.stdout)  # streamed: one big string may not fit a fragmented, capped heap
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
