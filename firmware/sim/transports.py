# Transports for a simulated meter that talks to a real head-end (sim/run.py --link). Real time, real I/O.
import time

from meter.clock import TICKS_MASK


def real_ticks_ms():
    # The link talks to a real peer in real time, whatever speed the meter's virtual clock runs at.
    return time.ticks_ms() & TICKS_MASK


def transport(spec, tls=None, base=""):
    """'tcp:HOST:PORT', 'tls:HOST:PORT' (TCP with TLS as a board profile's link.tls says, `tls`: meter.tls, its
    paths relative to `base`, the flash directory), 'serial:/dev/pts/N' (a pty standing in for a UART) or
    'console' (the REPL's own port, meter.console: the test board of meterkit.testing.board, whose link shares
    its USB serial port)."""
    from meter.transport import StreamTransport, TCPTransport, TLSTransport, open_tty

    kind, _, rest = spec.partition(":")
    if kind in ("tcp", "tls"):
        host, _, port = rest.rpartition(":")
        timing = {"ticks_ms": real_ticks_ms, "backoff_min_ms": 200, "backoff_max_ms": 2000}
        if kind == "tcp":
            return TCPTransport(host, int(port), **timing)
        from meter.tls import client_wrap, tls_problems

        problems = tls_problems(tls or {})
        if problems:
            raise SystemExit("--link tls: " + "; ".join(problems))
        return TLSTransport(host, int(port), client_wrap(tls, base), **timing)
    if kind == "serial":
        return StreamTransport(lambda: open_tty(rest), ticks_ms=real_ticks_ms, retry_min_ms=200,
                               retry_max_ms=2000)
    if kind == "console":
        from meter.console import Console

        return StreamTransport(Console, ticks_ms=real_ticks_ms, retry_min_ms=200, retry_max_ms=2000)
    raise SystemExit("--link must be tcp:HOST:PORT, tls:HOST:PORT, serial:PATH or console, not %r" % spec)
