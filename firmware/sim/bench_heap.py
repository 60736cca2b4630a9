# Where the linked, signing meter's heap goes: what stays resident, step by step (meterkit.bench.heap runs this
# in the 32-bit interpreter, docs/performance.md "Heap on a board"). Each figure is gc.mem_alloc() after a
# collection, minus the same before the step, so a module's figure excludes the modules it imported first.
#
#   micropython [-X freeze=...] firmware/sim/bench_heap.py BOARD FLASH_DIR   -> one JSON line: [[step, bytes]...]
#
# FLASH_DIR: a provisioned meter's flash (key made, head-end key installed), or an empty directory.
import gc
import json
import sys

# The order in which the linked meter imports its modules (a module's dependencies first).
# hal stands in for the board's (the simulator imports it too); p256_table is frozen: in flash, its module
# object alone on the heap. meter.pins is imported only to validate a profile (meterkit device deploy).
MODULES = ("events", "crc", "clock", "civil", "store", "cbor", "registers", "board", "ina219", "metrology",
           "alarms", "tou", "demand", "boundaries", "app", "p256", "p256_table", "cose", "messages", "identity",
           "seqno", "ring", "profile", "report", "frame", "outbox", "transport", "hal", "link", "disconnect",
           "control", "commands")


def used():
    gc.collect()
    return gc.mem_alloc()


def main(board_path, flash):
    steps = []
    t = used()

    def step(name):
        nonlocal t
        now = used()
        steps.append([name, now - t])
        t = now

    for m in MODULES:
        __import__("meter." + m)
        step("import meter." + m)
    from meter import p256
    from meter.app import Meter
    from meter.board import load_board
    from sim.hardware import open_sim
    step("import the simulator (sim.hardware)")
    hw = open_sim(load_board(board_path), flash_dir=flash)
    step("the simulated board (chip model, clock, bus): not on a board")
    meter = Meter(hw, sink=None)
    step("Meter: sensor, metrology, registers, store, calendars, demand, boundaries (no reporting)")
    p256.precompute()
    step("p256 fixed-base comb table (frozen: in flash)")
    meter._open_reporting(lambda seq, fr: None, 60, 900)
    step("reporting: identity, frame seq, load profile and event log (ring indexes), reporter")
    from sim.transports import transport
    step("import sim.transports")
    meter.attach_link(transport("tcp:127.0.0.1:9"))
    step("link: outbox (ring index), deframer and buffers")
    meter.start()
    step("start (boot frames, sensor init)")
    for _ in range(64 * 14):
        meter.cycle()
    step("one minute of metering (first reading signed, held in the outbox)")
    print(json.dumps(steps))


main(sys.argv[1], sys.argv[2])
