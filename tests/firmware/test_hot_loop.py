# The whole sampling hot loop (driver wait_cycle + metrology add, kernel runs included) allocates nothing:
# checked with heap_lock() and, because MicroPython quietly moves an oversized call frame to the C stack
# while the heap is locked, with the allocation counter mem_total() as well. Across the 2^30 wrap of ticks_us
# too: on a 32-bit port (an ESP32, or the tests' mp32) any tick intermediate past 2^30 - 1 is a heap int.
import micropython

from meter.clock import TICKS_MASK, TICKS_PERIOD
from meter.ina219 import INA219
from meter.metrology import Metrology
from mptest import eq, ge
from test_ina219_driver import FakeBus, FakeTime

BATCH = 64
SHUNT = -12345  # -123.45 mV: export
BUS = 3210  # 12.84 V
CYCLE_US = 68100 + 532  # the driver's nominal cycle (shunt 128 samples, bus 12 bits)


def _rig(start=0):
    bus = FakeBus()
    tm = FakeTime(bus, start)
    drv = INA219(bus, sleep_us=tm.sleep, ticks_us=tm.ticks, sleep_ms=tm.sleep_ms)  # the meter's waits
    bus.regs[1] = 0x10000 + SHUNT
    bus.regs[2] = (BUS << 3) | 2  # CNVR
    metro = Metrology(drv.cycle_us, drv.shunt_uohm, batch=BATCH)
    return drv, metro, tm


def _loop(drv, metro, n):
    # A while loop with few locals: range() would allocate its iterator, which is the test's, not the meter's.
    batches = 0
    while n:
        n -= 1
        if drv.wait_cycle() and metro.add(drv.shunt, drv.bus, drv.tick):
            batches += 1
    return batches


def _exact(metro, what):
    # constant power: the energy is |shunt| x bus x (elapsed time in 4 us units); the carry telescopes
    imp, exp = metro.take_uwh()
    rest_imp, rest_exp = metro.pending_raw()
    eq((imp, rest_imp), (0, 0), what + ": no import with a negative shunt")
    eq(exp * metro.units_per_uwh + rest_exp, -SHUNT * BUS * (metro.elapsed_us // 4), what + ": export raw units")


def test_hot_loop_under_heap_lock():
    drv, metro, _ = _rig()
    _loop(drv, metro, BATCH)  # warm up: first batch, first kernel run
    micropython.heap_lock()
    try:
        batches = _loop(drv, metro, 3 * BATCH)
    finally:
        micropython.heap_unlock()
    eq(batches, 3, "kernel runs inside the locked loop")


def test_hot_loop_allocates_no_bytes_at_all():
    drv, metro, _ = _rig()
    _loop(drv, metro, BATCH)
    before = micropython.mem_total()
    batches = _loop(drv, metro, 4 * BATCH)
    eq(micropython.mem_total() - before, 0, "bytes allocated by 256 cycles")
    eq(batches, 4, "batches")


def test_hot_loop_energy_is_exact():
    drv, metro, _ = _rig()
    _loop(drv, metro, 5 * BATCH + 7)
    _exact(metro, "333 cycles")
    eq(metro.samples, 5 * BATCH + 7, "samples")


def _through_wraps(drv, metro, tm, n):
    # Cycles until ticks_us has wrapped n more times, then a batch (the kernel integrates across the wrap).
    w = tm.wraps + n
    while tm.wraps < w:
        if drv.wait_cycle():
            metro.add(drv.shunt, drv.bus, drv.tick)
    _loop(drv, metro, BATCH)


def test_hot_loop_across_two_tick_wraps():
    # From just before a wrap of ticks_us through the one after it (2^30 us = 17.9 min later), twice: with the
    # allocated bytes counted, then with the heap locked (which alone would miss a call frame moved to the
    # C stack). Nothing is allocated, and the energy is exact across all four wraps.
    drv, metro, tm = _rig(start=TICKS_MASK - (BATCH + 10) * CYCLE_US)
    _loop(drv, metro, BATCH)
    eq(tm.wraps, 0, "warmed up before the first wrap")
    before = micropython.mem_total()
    _through_wraps(drv, metro, tm, 2)
    eq(micropython.mem_total() - before, 0, "bytes allocated through two wraps")
    micropython.heap_lock()
    try:
        _through_wraps(drv, metro, tm, 2)
    finally:
        micropython.heap_unlock()
    eq(tm.wraps, 4, "ticks_us wraps crossed")
    ge(drv.cycles, 3 * TICKS_PERIOD // drv.cycle_us, "cycles read (over 3 x 2^30 us of them)")
    eq(metro.samples, drv.cycles, "every cycle read was integrated")
    _exact(metro, "%d cycles" % drv.cycles)
