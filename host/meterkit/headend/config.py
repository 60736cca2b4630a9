"""How a concentrator behaves: every setting in one typed, checked value (docs/concentrator.md)."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field

from meterkit.headend.alertrules import AlertRules


@dataclass(frozen=True)
class ConcentratorConfig:
    """The concentrator's settings: Concentrator(store, headend, config=...), or its fields as keywords."""

    # outages
    offline_after: float = 3  # a meter silent for this many reporting periods is offline
    match_window: float = 300.0  # s after an outage ends in which the meter's own account of it is awaited
    # gaps and back-fill
    backfill_after: float = 30.0  # s a hole may stay open (the meter's own resend) before a back-fill command
    backfill_attempts: int = 3  # back-fill commands per hole, each sent when the previous one expired
    profile_request_s: int = 86400  # how long a request for the load-profile rows of gone frames stays queued
    # what the head-end signs
    ack_ttl_s: int = 600  # an acknowledgement expires this long after issue
    command_ttl_s: int = 300  # ... a command (or its signed attempt)
    # operator commands
    command_retry_after: float | None = None  # s on a new connection before an unanswered attempt is repeated
    #                                           (None: backfill_after)
    command_attempts: int = 5  # attempts without an answer before a command has failed
    # meters' clocks (headend/clocks.py): drift measured from two successive readings/hellos that travelled
    # alike (their receive times and meter times advance by the same amount, within clock_jitter_s)
    clock_drift_max_s: float | None = 10.0  # a meter off by more is set (None: never for drift; unset: always)
    clock_jitter_s: float = 2.0  # ... how alike: a frame that waited in an outbox fails this test
    clock_set_every_s: float = 600.0  # s between automatic set-time commands to one meter, at least
    # connections: limits for TCP peers (a serial port is trusted wiring)
    idle_timeout: float = 600.0  # s without a valid frame: hung up
    # ... how many, and who first (headend/admission.py; docs/concentrator.md, "Connection limits")
    max_connections: int | None = None  # TCP connections in all (None: the file-descriptor limit less 64)
    max_per_source: int | None = 32  # unauthenticated connections from one address (None: no cap)
    known_reserve: int = 32  # of max_connections, only for connections of known meters (at most half)
    auth_timeout: float = 90.0  # s a connection has to show a verified frame of a registered meter
    # load balancers in front (HAProxy with send-proxy-v2): their connections begin with a PROXY v2 header
    # naming the meter's address, which the limits above then use (headend/proxyheader.py)
    proxy_from: tuple[str, ...] = ()
    # TLS on the TCP listeners (headend/tls.py; docs/security.md, "What TLS adds"): the server's certificate and
    # key (PEM files), and for mutual TLS the CA whose meter certificates are required; serial ports stay clear
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_handshake_timeout: float = 30.0  # s a TCP peer has to complete the handshake
    tls: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)  # made from the above
    limit_log_s: float = 10.0  # a repeating connection warning (refusals, accept errors) is logged once per this
    max_rate: float | None = 128 * 1024  # bytes/s read per peer (token bucket); None: unlimited
    max_burst: int = 256 * 1024  # ... bucket size, bytes
    max_noise: int = 256 * 1024  # bytes of noise without a valid frame: hung up
    max_rejects: int = 100  # rejected frames (replays aside): hung up
    # replays of stored frames on a TCP connection that has shown no fresh frame of the meter are not answered
    # (docs/security.md, "Replays"), but for one recovery acknowledgement per meter per recovery_ack_s, while the
    # meter's own connection is gone or silent that long: a meter whose resent window is all stored recovers
    recovery_ack_s: float = 60.0
    max_unread: int = 64 * 1024  # bytes of acknowledgements the peer has not read: hung up
    backlog_limit: int = 64  # frames waiting on one connection: reading paused (TCP backpressure)
    # serial ports
    baudrate: int = 115200
    reconnect_s: float = 1.0  # s between attempts to (re)open a serial port
    # batches and housekeeping
    batch_frames: int = 1024  # frames verified, stored and committed together
    per_link: int = 64  # ... at most this many from one connection in turn (round robin)
    tick_s: float = 1.0  # s between housekeeping ticks (outages, gaps, commands)
    replay_window: int = 4096  # sequence numbers per meter the in-memory replay guard tells apart
    registry_refresh_s: float = 5.0  # s before an unknown kid is looked up in the database again
    # the security monitor (headend/monitor.py, docs/alerts.md): its rules and thresholds; None: no monitor
    alert_rules: AlertRules | None = field(default_factory=AlertRules)

    def __post_init__(self) -> None:
        for name in _COUNTS:
            _check(self, name, 0 if name == "max_rejects" else 1, whole=True)
        _check(self, "known_reserve", 0, whole=True)
        for name in ("max_connections", "max_per_source"):
            if getattr(self, name) is not None:
                _check(self, name, 1, whole=True)
        for name in ("offline_after", "tick_s", "idle_timeout", "auth_timeout", "limit_log_s"):
            _check(self, name, 0, strictly=True)
        for name in ("match_window", "backfill_after", "reconnect_s", "registry_refresh_s", "clock_jitter_s",
                     "clock_set_every_s", "recovery_ack_s"):
            _check(self, name, 0)
        if self.clock_drift_max_s is not None:
            _check(self, "clock_drift_max_s", 0, strictly=True)
        if self.command_retry_after is not None:
            _check(self, "command_retry_after", 0)
        if self.max_rate is not None:
            _check(self, "max_rate", 0, strictly=True)
        if self.alert_rules is not None and not isinstance(self.alert_rules, AlertRules):
            raise TypeError(f"concentrator setting alert_rules must be AlertRules or None, not {self.alert_rules!r}")
        _check(self, "tls_handshake_timeout", 0, strictly=True)
        object.__setattr__(self, "tls", _tls_context(self))
        try:
            # the form a peer's address takes (a frozen dataclass: set through object)
            object.__setattr__(self, "proxy_from", tuple(str(ipaddress.ip_address(a)) for a in self.proxy_from))
        except ValueError as e:
            raise ValueError(f"concentrator setting proxy_from: {e}") from None

    @property
    def retry_after(self) -> float:
        """command_retry_after, by default backfill_after: the meter's own resend has had its chance by then."""
        return self.backfill_after if self.command_retry_after is None else self.command_retry_after


_COUNTS = ("backfill_attempts", "profile_request_s", "ack_ttl_s", "command_ttl_s", "command_attempts", "max_burst",
           "max_noise", "max_rejects", "max_unread", "backlog_limit", "baudrate", "batch_frames", "per_link",
           "replay_window")


def _check(cfg: ConcentratorConfig, name: str, low: float, strictly: bool = False, whole: bool = False) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)):
        raise TypeError(f"concentrator setting {name} must be {'a whole' if whole else 'a'} number, not {v!r}")
    if v < low or (strictly and v == low):
        raise ValueError(f"concentrator setting {name} must be {'above' if strictly else 'at least'} {low}, "
                         f"not {v!r}")


def _tls_context(cfg: ConcentratorConfig) -> ssl.SSLContext | None:
    """The server context the TLS settings ask for, or None without them; ValueError says what is wrong."""
    from meterkit.headend.tls import TlsSetupError, server_context

    if cfg.tls_cert is None and cfg.tls_key is None:
        if cfg.tls_client_ca is not None:
            raise ValueError("concentrator setting tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        return None
    if cfg.tls_cert is None or cfg.tls_key is None:
        raise ValueError("concentrator settings tls_cert and tls_key go together")
    try:
        return server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
    except TlsSetupError as e:
        raise ValueError(f"concentrator TLS settings: {e}") from None
