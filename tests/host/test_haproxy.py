"""The real HAProxy in front of several TCP servers (meterkit.testing.haproxy): connections spread over the live
backends; a backend that dies is taken out, and every connection made meanwhile reaches a live one."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from meterkit.testing.haproxy import HAProxy


class _Named(socketserver.ThreadingTCPServer):
    """A backend that says its name to every connection and then holds it open until the peer closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, port: int = 0):
        self.name = name

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner):
                inner.request.sendall(name.encode() + b"\n")
                while inner.request.recv(1024):
                    pass

        super().__init__(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server_address[:2]

    def kill(self) -> None:
        self.shutdown()
        self.server_close()


def _who(address: tuple[str, int]) -> tuple[str, socket.socket]:
    s = socket.create_connection(address, timeout=10)
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(64)
        assert chunk, "HAProxy closed the connection without a backend's answer"
        line += chunk
    return line.decode().strip(), s


def test_connections_spread_over_the_backends_and_a_dead_one_is_taken_out(tmp_path, haproxy_available):
    a, b, c = _Named("a"), _Named("b"), _Named("c")
    with HAProxy(tmp_path, [a.address, b.address, c.address]) as lb:
        lb.wait_servers({"c1": True, "c2": True, "c3": True})
        held = [_who(lb.address) for _ in range(30)]
        names = [n for n, _ in held]
        # leastconn over long-lived connections: each backend holds a third of them
        assert sorted(names.count(x) for x in "abc") == [10, 10, 10], names
        assert sorted(s.current for s in lb.servers().values()) == [10, 10, 10]
        b.kill()
        # at once, before the health check has noticed: a refused connect is retried on another backend
        quick = [_who(lb.address) for _ in range(10)]
        assert "b" not in [n for n, _ in quick]
        lb.wait_servers({"c2": False, "c1": True, "c3": True})
        later = [_who(lb.address) for _ in range(10)]
        assert {n for n, _ in later} <= {"a", "c"}
        for _, s in held + quick + later:
            s.close()
    a.kill()
    c.kill()


def test_a_backend_that_returns_is_put_back(tmp_path, haproxy_available):
    a, b = _Named("a"), _Named("b")
    with HAProxy(tmp_path, [a.address, b.address]) as lb:
        lb.wait_servers({"c1": True, "c2": True})
        b.kill()
        lb.wait_servers({"c2": False})
        b = _Named("b", b.address[1])  # restarted on its port
        lb.wait_servers({"c2": True})
        held = [_who(lb.address) for _ in range(4)]
        assert sorted(n for n, _ in held) == ["a", "a", "b", "b"]
        for _, s in held:
            s.close()
    a.kill()
    b.kill()


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="balance"):
        HAProxy(tmp_path, [("127.0.0.1", 1)], balance="random-ish")
    with pytest.raises(ValueError, match="at least one backend"):
        HAProxy(tmp_path, [])
