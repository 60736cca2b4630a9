# TLS on the meter's link (meter/tls.py, meter.transport.TLSTransport): a board profile's link.tls section is
# checked in every interpreter; the transport's handshake runs against a real TLS server (MicroPython's own ssl,
# server side, in this process on loopback) where the ssl module exists. tlsdata/: certificates made by
# `meterkit keys tls` (test-only keys; valid from 2000 to 9999, as every meterkit certificate: docs/security.md).
import socket
import time

from meter import board
from meter.tls import client_context, client_wrap, tls_problems
from meter.transport import TLSTransport
from mptest import contains, eq, not_mp32, raises

DATA = __file__.rsplit("/", 1)[0] + "/tlsdata"
NAME = "headend.meterkit"
NO_SSL = "needs the ssl module (mbedTLS: an extmod module the core-only 32-bit interpreter does not have)"


def _board(link):
    b = {"name": "t", "mcu": "unix-sim", "flash_dir": "flash", "sim": {},
         "i2c": {"id": 0, "scl": 0, "sda": 0, "freq": 400000},
         "ina219": {"addr": 64, "shunt_uohm": 100000, "max_ma": 3200, "shunt_avg": 128, "bus_bits": 12},
         "relay": {"pin": 0}, "checkpoint": {"quantum_wh": 10, "max_interval_s": 900}, "link": link}
    return b


def test_a_link_tls_section_is_checked():
    good = {"kind": "tcp", "host": "10.0.0.1", "port": 4840, "tls": {"ca": "tls/ca.der", "server_name": NAME}}
    board.validate_board(_board(good))
    mutual = dict(good, tls={"ca": "tls/ca.der", "server_name": NAME, "cert": "tls/m.der", "key": "tls/m.key"})
    board.validate_board(_board(mutual))
    for tls, why in (({"ca": "tls/ca.der"}, "server_name is required"),
                     ({"server_name": NAME}, "ca is required"),
                     ({"ca": "a", "server_name": NAME, "cert": "c"}, "go together"),
                     ({"ca": "a", "server_name": NAME, "pin": "x"}, "unknown key"),
                     ({"ca": "", "server_name": NAME}, "non-empty string"),
                     ("yes", "must be an object")):
        e = raises(board.BoardError, board.validate_board, _board(dict(good, tls=tls)))
        contains(why, str(e))
    uart = {"kind": "uart", "id": 1, "tx": 17, "rx": 16, "baud": 115200, "tls": good["tls"]}
    contains("not a UART", str(raises(board.BoardError, board.validate_board, _board(uart))))
    eq(tls_problems(good["tls"]), [], "problems")


@not_mp32(NO_SSL)
def test_the_context_requires_the_servers_certificate():
    import ssl

    ctx = client_context({"ca": "ca.der", "server_name": NAME}, DATA)
    eq(ctx.verify_mode, ssl.CERT_REQUIRED, "not MicroPython's default CERT_NONE")
    contains("missing.der", str(raises(OSError, client_context, {"ca": "missing.der", "server_name": NAME}, DATA)))


class _Server:
    """A TLS server on loopback in this process, stepped by hand: MicroPython's ssl, server side."""

    def __init__(self, port, client_ca=None):
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with open(DATA + "/headend.der", "rb") as c, open(DATA + "/headend.key.der", "rb") as k:
            self.ctx.load_cert_chain(c.read(), k.read())
        if client_ca:
            with open(DATA + "/" + client_ca, "rb") as f:
                self.ctx.load_verify_locations(cadata=f.read())
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.ls.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            self.ls.close()
            raise
        self.ls.listen(2)
        self.ls.setblocking(False)
        self.port = port
        self.conn = None
        self.got = bytearray()
        self.error = None

    def step(self):
        if self.conn is None:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            s.setblocking(False)
            self.conn = self.ctx.wrap_socket(s, server_side=True, do_handshake_on_connect=False)
        if self.error is None:
            try:
                b = self.conn.read(256)
                if b:
                    self.got.extend(b)
            except (OSError, ValueError) as e:
                self.error = e

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.ls.close()


def _server(client_ca=None):
    for port in range(48620, 48680):  # a free one (MicroPython's Unix sockets have no getsockname)
        try:
            return _Server(port, client_ca)
        except OSError:
            continue
    raise OSError("no free port")


def _run(tls, client_ca=None, steps=400):
    srv = _server(client_ca)
    t = TLSTransport("127.0.0.1", srv.port, client_wrap(tls, DATA), ticks_ms=time.ticks_ms, backoff_min_ms=60000,
                     backoff_max_ms=60000)
    try:
        for _ in range(steps):
            if t.connect() or t.s is None and t.attempts:
                break
            srv.step()
            time.sleep_ms(1)
        return t, srv
    except Exception:
        t.close()
        srv.close()
        raise


@not_mp32(NO_SSL)
def test_the_meter_connects_only_once_the_head_end_proved_its_certificate():
    t, srv = _run({"ca": "ca.der", "server_name": NAME})
    try:
        eq(t.connected, True, "connected (%s)" % t.last_error)
        eq((t.handshakes, t.tls_failures), (1, 0), "one handshake")
        eq(t.write(b"\x00frame"), 6, "written")
        for _ in range(200):
            srv.step()
            if len(srv.got) >= 7:
                break
            time.sleep_ms(1)
        eq(bytes(srv.got), b"\x00\x00frame", "the session's first byte is a frame delimiter, then the link's")
        srv.conn.write(b"ack")
        buf = bytearray(8)
        for _ in range(200):
            n = t.read_into(buf)
            if n:
                break
            time.sleep_ms(1)
        eq(bytes(buf[:n]), b"ack", "read")
    finally:
        t.close()
        srv.close()


@not_mp32(NO_SSL)
def test_a_wrong_pin_or_name_is_a_failed_attempt_and_nothing_is_sent():
    for tls, why in (({"ca": "other-ca.der", "server_name": NAME}, "CA"),
                     ({"ca": "ca.der", "server_name": "someone.else"}, "CN")):
        t, srv = _run(tls)
        try:
            eq((t.connected, t.handshakes, t.tls_failures), (False, 0, 1), "refused: %r" % tls)
            contains(why, t.last_error)
            eq(t.s, None, "closed, backing off")
            for _ in range(20):
                srv.step()
            eq(bytes(srv.got), b"", "nothing of the link's reached the server")
        finally:
            t.close()
            srv.close()


@not_mp32(NO_SSL)
def test_mutual_tls_the_meter_shows_its_certificate():
    t, srv = _run({"ca": "ca.der", "server_name": NAME, "cert": "meters/meter.der", "key": "meters/meter.key.der"},
                  client_ca="ca.der")
    try:
        eq(t.connected, True, "connected with its certificate (%s)" % t.last_error)
    finally:
        t.close()
        srv.close()
