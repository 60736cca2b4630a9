# The REPL's own port as the link's stream: a board with one USB cable, whose frames share the console with
# the REPL (an ESP32-DevKitC's UART0, an S3/C3's USB serial; the test board of meterkit.testing.board).
#
# Frames from the head-end contain 0x03 bytes, and a Ctrl-C would stop the meter: so Ctrl-C is switched off
# (micropython.kbd_intr(-1)) while the console carries the link. The tools (meterkit device deploy, provision,
# calibrate) get the REPL back with ATTENTION: a run of zero bytes that no head-end frame contains (a frame
# is 0x00 COBS-data 0x00, so at most two zeros ever follow each other), then Ctrl-C. The meter switches
# Ctrl-C back on and stops with KeyboardInterrupt, as a Ctrl-C would have stopped it: what was metered since
# the last checkpoint is what a restart costs (docs/storage.md).
#
# Console is a stream for meter.transport.StreamTransport (read, write, select.poll through ioctl). It reads
# one byte at a time, and only what poll has said is there: a board's stdin read blocks until it has all it
# was asked for.
import io
import select
import sys

ATTENTION = b"\x00" * 8 + b"\x03"
_ZEROS = 8
_POLL = 3  # MP_STREAM_POLL


class Console(io.IOBase):
    def __init__(self, stdin=None, stdout=None, kbd_intr=None):
        if kbd_intr is None:
            import micropython

            kbd_intr = micropython.kbd_intr
        self._in = stdin or sys.stdin.buffer
        self._out = stdout or sys.stdout.buffer
        self._kbd_intr = kbd_intr
        self._poll = select.poll()
        self._poll.register(stdin or sys.stdin, select.POLLIN)
        self._one = bytearray(1)
        self._zeros = 0
        kbd_intr(-1)

    def ioctl(self, req, arg):
        if req != _POLL:
            return -1  # no file descriptor: poll asks for readiness through this method
        ready = select.POLLOUT & arg
        if arg & select.POLLIN and self._poll.poll(0):
            ready |= select.POLLIN
        return ready

    def readinto(self, buf):
        n = 0
        one = self._one
        while n < len(buf) and self._poll.poll(0):
            if not self._in.readinto(one):
                break
            b = one[0]
            if b == 3 and self._zeros >= _ZEROS:
                self.close()
                raise KeyboardInterrupt("attention from the console: the REPL is handed back")
            self._zeros = self._zeros + 1 if b == 0 else 0
            buf[n] = b
            n += 1
        return n

    def write(self, buf):
        return self._out.write(buf)

    def close(self):
        self._kbd_intr(3)  # Ctrl-C works again once the link lets go of the console
