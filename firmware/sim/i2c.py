# Simulated I2C bus with the machine.I2C API (the subset drivers use), for the Unix port and host tests.
# Runs unchanged under MicroPython and CPython.
#
# Devices are plain objects with read_reg(reg) -> 0..65535 and write_reg(reg, value): 16-bit registers sent
# MSB first behind an 8-bit register pointer, as on the INA219. Every transaction advances the virtual clock
# by its time on the wire: 9 bit times per byte (8 data + ACK) plus one per START/repeated START and one for
# STOP. A register read with the pointer write (START, addr+W, reg, rSTART, addr+R, 2 bytes, STOP) is 48 bit
# times = 120 us at 400 kHz; a read without the pointer write (START, addr+R, 2 bytes, STOP) is 29 = 72.5 us.
# The clock is advanced first and the device accessed after, so the device sees the time the data left it.
#
# Faults: an address with no device raises OSError(ENODEV) after the address byte (as machine.I2C does on a
# NACK); fail_next(n, err) makes the next n transactions raise OSError(err); fail_rate(p, seed) makes each
# transaction fail with probability p (deterministic for a seed). A failed transaction still costs the
# START, the address byte and the STOP on the wire. stall_at(t_us, us): the first transaction at or after
# virtual time t_us hangs for `us` (a device holding SCL low), e.g. to show that the watchdog trips.
import errno

_ADDR_BITS = 11  # START + address byte with ACK + STOP


class SimI2C:
    def __init__(self, clock, freq=400000):
        self.clock = clock
        self.freq = freq
        self._devs = {}
        self._ptr = {}  # register pointer per address (writeto / readfrom_into style)
        self._rem = 0  # sub-microsecond remainder of wire time, in units of 1/freq us
        self._fail_n = 0
        self._fail_err = errno.EIO
        self._rate = 0  # failure threshold out of 2^32; 0 = no random failures
        self._rng = 1
        self._stall = None  # (at_us, us) of a pending stall
        self.transactions = 0
        self.failures = 0
        self.wire_us = 0  # total whole microseconds charged

    # -- topology --------------------------------------------------------------------------------------------
    def add(self, addr, device):
        self._devs[addr] = device
        self._ptr[addr] = 0

    def remove(self, addr):
        """Take a device off the bus (it stops ACKing its address); returns it."""
        self._ptr.pop(addr, None)
        return self._devs.pop(addr, None)

    # -- fault injection ------------------------------------------------------------------------------------
    def fail_next(self, n, err=errno.EIO):
        self._fail_n = n
        self._fail_err = err

    def fail_rate(self, p, seed=1):
        """Each transaction fails with EIO with probability p (0 turns it off)."""
        self._rate = int(p * 4294967296) if p > 0 else 0
        self._rng = (seed & 0xFFFFFFFF) or 1

    # -- wire time and dispatch ---------------------------------------------------------------------------
    # Hot path (about four million transactions per simulated day). MicroPython allocates a function's frame
    # on the heap when its locals plus value stack exceed 11 words, so these stay small and delegate the
    # rare cases (faults, odd lengths) to helpers.
    def _wire(self, bits):
        q = self._rem + bits * 1000000
        us = q // self.freq
        self._rem = q - us * self.freq
        self.wire_us += us
        self.clock.now_us += us

    def _begin(self, addr, base, buf):
        """Charge a transaction of base + 9 * len(buf) bit times; return the device at addr, or raise
        OSError as the real bus would."""
        self.transactions += 1
        if self._fail_n or self._rate or self._stall:
            self._maybe_fail()
        dev = self._devs.get(addr)
        if dev is None:
            self._fault(errno.ENODEV)
        self._wire(base + 9 * len(buf))
        return dev

    def stall_at(self, at_us, us):
        self._stall = (at_us, us)

    def _maybe_fail(self):
        st = self._stall
        if st is not None and self.clock.now_us >= st[0]:
            self._stall = None
            self.clock.now_us += st[1]
        if self._fail_n:
            self._fail_n -= 1
            self._fault(self._fail_err)
        x = self._rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        if x < self._rate:
            self._fault(errno.EIO)

    def _fault(self, err):
        self.failures += 1
        self._wire(_ADDR_BITS)
        raise OSError(err)

    # -- machine.I2C API ----------------------------------------------------------------------------------
    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            self._wire(_ADDR_BITS)
            if addr in self._devs:
                found.append(addr)
        return found

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        # START, addr+W, pointer, repeated START, addr+R, n bytes, STOP: 30 + 9n bit times
        dev = self._begin(addr, 30, buf)
        self._ptr[addr] = memaddr
        _put(buf, dev.read_reg(memaddr))

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        dev = self._begin(addr, 20, buf)  # START, addr+W, pointer, n bytes, STOP
        self._ptr[addr] = memaddr
        if len(buf) >= 2:
            dev.write_reg(memaddr, (buf[0] << 8) | buf[1])

    def writeto(self, addr, buf, stop=True):
        """Plain write: the first byte sets the register pointer, two more bytes write that register.
        An empty write just probes the address (ACK or ENODEV). Returns the number of bytes ACKed."""
        dev = self._begin(addr, 11, buf)  # START, addr+W, n bytes, STOP
        if len(buf) >= 1:
            self._ptr[addr] = buf[0]
        if len(buf) >= 3:
            dev.write_reg(buf[0], (buf[1] << 8) | buf[2])
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        """Plain read of the register the pointer was last set to (the INA219 does not auto-increment)."""
        dev = self._begin(addr, 11, buf)  # START, addr+R, n bytes, STOP
        _put(buf, dev.read_reg(self._ptr[addr]))


def _put(buf, v):
    # A 16-bit register, MSB first; reading past it repeats it (no pointer auto-increment on the INA219).
    if len(buf) == 2:
        buf[0] = v >> 8
        buf[1] = v & 0xFF
        return
    for i in range(len(buf)):
        buf[i] = v & 0xFF if i & 1 else v >> 8
