# The whole sampling hot loop (driver wait_cycle + metrology add, kernel runs included) allocates nothing:
# checked with heap_lock() and, because MicroPython quietly moves an oversized call frame to the C stack
# while the heap is locked, with the allocation counter mem_total() as well.
import micropython

from meter.ina219 import INA219
from meter.metrology import Metrology
from mptest import eq
from test_ina219_driver import FakeBus, FakeTime

BATCH = 64


def _rig():
    bus = FakeBus()
    tm = FakeTime(bus)
    drv = INA219(bus, sleep_us=tm.sleep, ticks_us=tm.ticks)
    bus.regs[1] = 0x10000 - 12345  # -123.45 mV: export
    bus.regs[2] = (3210 << 3) | 2  # 12.84 V, CNVR
    metro = Metrology(drv.cycle_us, drv.shunt_uohm, batch=BATCH)
    return drv, metro


def _loop(drv, metro, n):
    # A while loop with few locals: range() would allocate its iterator, which is the test's, not the meter's.
    batches = 0
    while n:
        n -= 1
        if drv.wait_cycle() and metro.add(drv.shunt, drv.bus, drv.tick):
            batches += 1
    return batches


def test_hot_loop_under_heap_lock():
    drv, metro = _rig()
    _loop(drv, metro, BATCH)  # warm up: first batch, first kernel run
    micropython.heap_lock()
    try:
        batches = _loop(drv, metro, 3 * BATCH)
    finally:
        micropython.heap_unlock()
    eq(batches, 3, "kernel runs inside the locked loop")


def test_hot_loop_allocates_no_bytes_at_all():
    drv, metro = _rig()
    _loop(drv, metro, BATCH)
    before = micropython.mem_total()
    batches = _loop(drv, metro, 4 * BATCH)
    eq(micropython.mem_total() - before, 0, "bytes allocated by 256 cycles")
    eq(batches, 4, "batches")


def test_hot_loop_energy_is_exact():
    drv, metro = _rig()
    _loop(drv, metro, 5 * BATCH + 7)
    imp, exp = metro.take_uwh()
    rest_imp, rest_exp = metro.pending_raw()
    eq(imp, 0, "no import with a negative shunt")
    eq(rest_imp, 0, "no import remainder")
    # constant power: the energy is |shunt| x bus x (elapsed time in 4 us units); the carry telescopes
    want = 12345 * 3210 * (metro.elapsed_us // 4)
    eq(exp * metro.units_per_uwh + rest_exp, want, "export raw units")
    eq(metro.samples, 5 * BATCH + 7, "samples")
