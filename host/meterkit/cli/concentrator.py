"""`meterkit concentrator`: receive, verify, store and acknowledge meter frames until stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from meterkit import wire as P
from meterkit.cli.common import fail, host_port
from meterkit.headend.alertrules import AlertRules, AlertRulesError, load_rules
from meterkit.headend.concentrator import Concentrator
from meterkit.headend.handover import control_path
from meterkit.headend.keyring import KeyRing
from meterkit.integrations.mqtt.bridge import MqttBridge
from meterkit.integrations.mqtt.config import MqttConfig, MqttConfigError, parse_url
from meterkit.store import StoreError, StoreUnavailable, open_store
from meterkit.store.api import Store
from meterkit.wire.keys import KeyFileError, load_private

log = logging.getLogger("meterkit.concentrator")

WAIT_FIRST_S = 0.5  # a database server unreachable at start is tried again after this, doubling up to ...
WAIT_MAX_S = 10.0
EXIT_DB_UNREACHABLE = 3  # --db-wait ran out


class FileClock:
    """The time a simulated fleet publishes (meterkit.sim.fleet: UTC seconds as text, replaced atomically), so
    that a concentrator process and simulated meters running at many times real time agree on it. Never goes
    backwards; a file that cannot be read keeps the last time."""

    def __init__(self, path: str):
        self.path = path
        self.last = 0.0

    def __call__(self) -> float:
        try:
            with open(self.path) as f:
                t = float(f.read())
        except (OSError, ValueError):
            t = self.last
        self.last = max(self.last, t)
        return self.last


def _drift_max(text: str) -> float | None:
    return None if text == "off" else float(text)


def _wait_s(text: str) -> float | None:
    return None if text == "forever" else float(text)


def open_waiting(db: str, wait_s: float | None) -> Store | int:
    """The store, or an exit code after saying why. While its server cannot be reached (PostgreSQL down or
    starting), tried again with a growing pause and a log line each attempt, for `wait_s` seconds (None: until
    it answers). Nothing listens for meters meanwhile: they are refused and connect again later."""
    start = time.monotonic()
    delay, attempt = WAIT_FIRST_S, 0
    while True:
        attempt += 1
        try:
            return open_store(db, create=True, readonly=False)
        except StoreUnavailable as e:
            waited = time.monotonic() - start
            if wait_s is not None and waited >= wait_s:
                return fail("concentrator", f"{e}; gave up after {attempt} attempts in {waited:.0f} s (--db-wait)",
                            EXIT_DB_UNREACHABLE)
            pause = delay if wait_s is None else min(delay, wait_s - waited)
            log.warning("%s (attempt %d); trying again in %.1f s; meters are not served until it answers",
                        e, attempt, pause)
            time.sleep(pause)
            delay = min(delay * 2, WAIT_MAX_S)
        except StoreError as e:
            return fail("concentrator", e)


async def _serve(args: argparse.Namespace, headend: P.HeadEnd, store: Store) -> int:
    clock = FileClock(args.clock_file) if args.clock_file else time.time
    try:
        rules = None if args.alert_rules == "off" else load_rules(args.alert_rules) if args.alert_rules \
            else AlertRules()
    except AlertRulesError as e:
        return fail("concentrator", e)
    try:
        conc = Concentrator(store, headend, clock, offline_after=args.offline_after, idle_timeout=args.idle_timeout,
                            backfill_after=args.backfill_after, baudrate=args.baud,
                            max_connections=args.max_connections, max_per_source=args.max_per_source or None,
                            known_reserve=args.known_reserve, auth_timeout=args.auth_timeout,
                            clock_drift_max_s=args.clock_drift_max, proxy_from=tuple(args.proxy_protocol_from),
                            alert_rules=rules, tls_cert=args.tls_cert, tls_key=args.tls_key,
                            tls_client_ca=args.tls_client_ca)
    except (TypeError, ValueError) as e:  # a setting out of range
        return fail("concentrator", e)
    try:
        bridge = _start_mqtt(args, store, conc) if args.mqtt else None
    except MqttConfigError as e:
        await conc.stop()
        return fail("concentrator", e)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
            pass
    try:
        for host, port in args.listen:
            h, p = await conc.start_tcp(host, port)
            print(f"listening on {h}:{p}", flush=True)
    except OSError as e:
        print(f"meterkit concentrator: cannot listen: {e}", file=sys.stderr)
        await conc.stop()
        return 2
    if args.listen and args.tls_cert:
        print(f"TLS on every listener: certificate {args.tls_cert}"
              + (f"; meters must show a certificate of {args.tls_client_ca}" if args.tls_client_ca else ""), flush=True)
    for url in args.serial:
        conc.add_serial(url)
        print(f"reading serial port {url}", flush=True)
    if args.serial:
        ctl = control_path(args.db)
        await conc.start_port_control(ctl)
        print(f"serial ports lent to `meterkit device ... --release-via {args.db}` through {ctl}", flush=True)
    print(f"head-end key id {headend.key_id.hex()}; {len(store.meters())} meters registered", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.stats_every)
        except asyncio.TimeoutError:
            s = conc.stats()
            print(f"{time.strftime('%H:%M:%S')} connections {s['connections_open']}, "
                  f"online {s['meters_online']}/{s['meters_known']}, stored {s.get('frames_stored', 0)}, "
                  f"rejected {s.get('rejected', 0)}, noise {s.get('noise_bytes', 0)} B, "
                  f"acks {s.get('acks_sent', 0)}, gaps open {s['gaps_open']}"
                  + (f", MQTT {'up' if bridge.link.connected else 'down'}" if bridge else ""), flush=True)
    await conc.stop()
    print(json.dumps(conc.stats(), indent=2))
    return 0


def _meters(store: Store, names: list[str], flag: str) -> frozenset[bytes]:
    out = set()
    for text in names:
        dev = store.lookup_device(text)
        if dev is None:
            raise MqttConfigError(f"{flag} {text}: no such meter (its 16-hex-digit id or its name; meterkit meters "
                                  "list)")
        out.add(dev)
    return frozenset(out)


def _mqtt_config(args: argparse.Namespace, store: Store) -> MqttConfig:
    """--mqtt and its options, checked before anything connects (MqttConfigError says what is wrong)."""
    if not args.mqtt_meter:
        raise MqttConfigError("--mqtt publishes only the meters opted in: give --mqtt-meter METER (repeatable) or "
                              "--mqtt-meter all")
    meters = None if "all" in args.mqtt_meter else _meters(store, args.mqtt_meter, "--mqtt-meter")
    return MqttConfig(**parse_url(args.mqtt, os.environ.get("METERKIT_MQTT_PASSWORD")), prefix=args.mqtt_prefix,
                      discovery_prefix=args.mqtt_discovery_prefix, node_id=args.mqtt_node_id, meters=meters,
                      totals_only=args.mqtt_totals_only, every_s=args.mqtt_every,
                      offline_periods=args.mqtt_offline_periods, commands=args.mqtt_commands,
                      allow=_meters(store, args.mqtt_allow, "--mqtt-allow"), shed_s=args.mqtt_shed_s)


def _start_mqtt(args: argparse.Namespace, store: Store, conc: Concentrator) -> MqttBridge:
    bridge = MqttBridge(_mqtt_config(args, store), conc).start()
    c = bridge.cfg
    print(f"MQTT: publishing {len(bridge.tracker.meters)} meters to {c.host}:{c.port} under {c.prefix}/, Home "
          f"Assistant discovery under {c.discovery_prefix}/; commands from Home Assistant "
          + (f"on for {len(c.allow)} meters" if c.commands else "off"), flush=True)
    return bridge


def _cmd_concentrator(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    if not args.listen and not args.serial:
        print("meterkit concentrator: nothing to serve: give --listen HOST:PORT and/or --serial PORT",
              file=sys.stderr)
        return 2
    try:
        keys = [P.HeadEnd(load_private(k)) for k in args.key]
    except KeyFileError as e:
        return fail("concentrator", e)
    try:
        store = open_waiting(args.db, args.db_wait)
    except KeyboardInterrupt:
        return fail("concentrator", "interrupted while waiting for the database", 130)
    if isinstance(store, int):
        return store
    headend = KeyRing(keys, store, key_dir=os.path.dirname(os.path.abspath(args.key[0])))
    for dev, (kid, _since) in store.meter_keys().items():
        if kid not in headend.keys:
            print(f"meterkit concentrator: meter {dev.hex()} holds head-end key {kid.hex()}, not given with --key: "
                  "nothing can be signed for it", file=sys.stderr)
    try:
        return asyncio.run(_serve(args, headend, store))
    finally:
        store.close()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `concentrator` to a `meterkit` subparsers object."""
    p = subparsers.add_parser("concentrator", help="receive, verify, store and acknowledge meter frames")
    p.add_argument("--db", required=True, help="SQLite database (created if missing), or a postgresql:// URL")
    p.add_argument("--db-wait", type=_wait_s, default=None, metavar="S",
                   help="a database server that cannot be reached at start is tried again (a log line each "
                        "attempt, pauses growing to 10 s) for S seconds, then exit code 3; meters are served only "
                        "once it answers (default: 'forever')")
    p.add_argument("--key", required=True, action="append",
                   help="the head-end's private key (PEM), signs acks and commands; during a key rotation give "
                        "both (repeatable): each meter's are signed with the key it holds, the first for a meter "
                        "with none recorded (meterkit keys status)")
    p.add_argument("--listen", action="append", type=host_port, default=[], metavar="HOST:PORT",
                   help="accept meters over TCP here (repeatable)")
    p.add_argument("--serial", action="append", default=[], metavar="PORT",
                   help="read meters on this serial port or pyserial URL (repeatable; reopened when it returns)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--offline-after", type=float, default=3,
                   help="a meter silent for this many reporting periods is offline (default 3)")
    p.add_argument("--idle-timeout", type=float, default=600.0,
                   help="close a TCP peer that sends no valid frame for this long, s (default 600)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="TCP connections in all (default: the file-descriptor limit less 64)")
    p.add_argument("--max-per-source", type=int, default=32, metavar="N",
                   help="unauthenticated connections from one address; one more closes the oldest (default 32; "
                        "0: no cap, e.g. many meters behind one NAT address)")
    p.add_argument("--known-reserve", type=int, default=32, metavar="N",
                   help="connections only meters that showed a verified frame may use (default 32)")
    p.add_argument("--auth-timeout", type=float, default=90.0, metavar="S",
                   help="close a TCP peer that sends no verified frame within this long after connecting, s "
                        "(default 90: more than a reading period)")
    p.add_argument("--proxy-protocol-from", action="append", default=[], metavar="ADDR",
                   help="a load balancer's address (repeatable): its connections begin with a PROXY v2 header "
                        "(HAProxy: send-proxy-v2) naming the meter's address, which the limits then use")
    t = p.add_argument_group("TLS on the TCP listeners (docs/security.md; certificates: meterkit keys tls)")
    t.add_argument("--tls-cert", metavar="PEM", help="the head-end's certificate: every --listen speaks TLS")
    t.add_argument("--tls-key", metavar="PEM", help="its private key")
    t.add_argument("--tls-client-ca", metavar="PEM",
                   help="mutual TLS: meters must show a certificate this CA issued (meterkit keys tls --meter)")
    p.add_argument("--backfill-after", type=float, default=30.0,
                   help="ask for missing frames when a gap is still open after this long, s (default 30)")
    p.add_argument("--clock-drift-max", type=_drift_max, default=10.0, metavar="S",
                   help="set a meter's clock when it drifts more than S seconds (default 10; 'off': never for "
                        "drift, unset clocks still are)")
    p.add_argument("--clock-file", metavar="PATH",
                   help="take the time from this file (UTC seconds as text), not the system clock: a simulated "
                        "fleet's clock (meterkit.sim.fleet), for simulations and tests")
    p.add_argument("--alert-rules", metavar="FILE",
                   help="the security monitor's rules and thresholds: a JSON or TOML file of overrides "
                        "(docs/alerts.md; default: the documented defaults; 'off': no monitor)")
    m = p.add_argument_group("MQTT and Home Assistant (docs/home-assistant.md)")
    m.add_argument("--mqtt", metavar="URL", help="publish to this broker: mqtt://USER:PASS@HOST:PORT (the password "
                                                 "may instead be in $METERKIT_MQTT_PASSWORD)")
    m.add_argument("--mqtt-meter", action="append", default=[], metavar="METER",
                   help="a meter to publish (repeatable; 'all': every registered meter): nothing is published "
                        "for a meter not opted in")
    m.add_argument("--mqtt-totals-only", action="store_true",
                   help="publish energy totals and availability only: no power, voltage, current, demand, relay")
    m.add_argument("--mqtt-every", type=int, default=0, metavar="S",
                   help="a meter's state at most once per S seconds of its time (default 0: every reading)")
    m.add_argument("--mqtt-commands", action="store_true",
                   help="take the relay switch and shed button from Home Assistant (with --mqtt-allow)")
    m.add_argument("--mqtt-allow", action="append", default=[], metavar="METER",
                   help="a meter Home Assistant may command (repeatable)")
    m.add_argument("--mqtt-shed-duration", dest="mqtt_shed_s", type=int, default=3600, metavar="S",
                   help="how long Home Assistant's shed button sheds, s (60..86400, default 3600)")
    m.add_argument("--mqtt-prefix", default="meterkit", help="state and command topics' prefix (default meterkit)")
    m.add_argument("--mqtt-discovery-prefix", default="homeassistant",
                   help="Home Assistant's discovery prefix (default homeassistant)")
    m.add_argument("--mqtt-node-id", default="meterkit",
                   help="this concentrator's name in its will topic PREFIX/NODE/status (default meterkit)")
    m.add_argument("--mqtt-offline-periods", type=float, default=1.5, metavar="N",
                   help="a meter silent N reporting periods is unavailable in Home Assistant (default 1.5)")
    p.add_argument("--stats-every", type=float, default=60.0, help="print a status line every N s")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_cmd_concentrator)
    return p
