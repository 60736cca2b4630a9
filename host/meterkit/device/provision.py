"""`meterkit device provision`: the board makes its own key, the host learns who it is, the board learns who
its head-end is and how to reach it, and the head-end's registry learns the meter.

1. On the board (through the REPL): meter.identity.Identity on the profile's flash_dir makes the device key on
   first use, from the board's own random source (on an ESP32 with the radio on: Espressif documents its RNG
   as true-random only then). The private key is written to the board's flash and never read back: the
   board prints its public key and device id only.
2. The head-end's public key is installed (Identity.install_headend: commands and acknowledgements are
   verified against it), and the firmware-signing public key when given (meter.fwupdate.install_key: update
   manifests are verified against it). For a TLS link the CA, and for mutual TLS the meter's certificate and
   key, are copied into flash_dir/tls/ (meterkit.device.tlsfiles: content-named, each renamed into place).
   Then the link settings are written to /link.json (a new file renamed into place, naming those files),
   checked first on this host against the profile by meter.board. Keys and files are checked on this host
   before the board is opened.
3. The meter is registered in the head-end's store (`register`: the store's Registry.register_meter), by its
   public key: the device id is the key id, so a registry entry can never name the wrong key.
4. The board restarts into main.py with its new link.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from meterkit.device.session import DeviceError, Session
from meterkit.device.tlsfiles import DIR as TLS_DIR
from meterkit.device.tlsfiles import TlsBundle

_PATH = """\
import sys, os
try:
    with open('/app.slot') as f:
        _s = '/app.' + f.read().strip()
    sys.path.insert(0, _s)
except OSError:
    _s = ''
"""

_IDENTITY = _PATH + """\
import json, binascii
from meter.board import load_board
_b = load_board(_s + '/board.json')
_d = _b['flash_dir']
try:
    os.mkdir(_d)
except OSError:
    pass
if sys.platform == 'esp32':
    import network
    network.WLAN(network.STA_IF).active(True)  # the RNG is true-random while the radio runs
from meter.identity import Identity
_i = Identity(_d)
_h = %r
if _h:
    _i.install_headend(binascii.unhexlify(_h))
_f = %r
if _f:
    from meter.fwupdate import install_key
    install_key(_d, binascii.unhexlify(_f))
print(repr((binascii.hexlify(_i.device_id).decode(), binascii.hexlify(_i.public_key).decode(), _i.created,
            _b['name'])))
"""

_WRITE_LINK = """\
import os
with open('/link.json.new', 'w') as f:
    f.write(%r)
os.rename('/link.json.new', '/link.json')
"""


_TLS_DIR = """\
import os
for _n in (%r, %r):
    try:
        os.mkdir(_n)
    except OSError:
        pass
"""

_RENAME = """\
import os
for _a, _b in %r:
    os.rename(_a, _b)
"""

# after the switch: the files of meterkit.device.tlsfiles.DIR that the link no longer names
_PRUNE_TLS = """\
import os
for _e in os.ilistdir(%r):
    if %r + '/' + _e[0] not in %r:
        os.remove(%r + '/' + _e[0])
"""


@dataclass
class Provisioned:
    device_id: bytes
    public_key: bytes
    created: bool  # the key was made now (False: the board had one already)
    board: str
    link: dict | None
    booted: str = ""
    firmware_key: bool = False  # the firmware-signing public key was installed
    tls_files: list[str] = field(default_factory=list)  # paths on the board of the TLS files copied


def serial_link(baud: int = 115200) -> dict:
    """The link on the REPL's own port, UART0 (meter.console); its pins are the board's chip's, filled in by
    provision() from the profile (console_link)."""
    return {"kind": "uart", "id": 0, "tx": None, "rx": None, "baud": baud}


def console_link(profile: dict, link: dict) -> dict:
    """A serial_link() with the console pins of the profile's chip (ESP32 GPIO1/3, S3 43/44, C3 21/20)."""
    from meter.pins import console_tx_rx

    if link.get("kind") != "uart" or link.get("tx") is not None:
        return link
    tx, rx = console_tx_rx(profile.get("chip", "esp32"))
    return {**link, "tx": tx, "rx": rx}


def wifi_link(ssid: str, password: str, host: str, port: int) -> dict:
    return {"kind": "wifi-tcp", "ssid": ssid, "password": password, "host": host, "port": port}


def check_link(profile: dict, link: dict) -> None:
    from meter.board import BoardError, validate_board

    trial = dict(profile)
    trial["link"] = link
    try:
        validate_board(trial)
    except BoardError as e:
        raise DeviceError(f"the link settings do not fit: {e}") from None


def _check_point(what: str, point: bytes | None) -> None:
    from meter.p256 import decode_point

    if point is not None and decode_point(point) is None:
        raise DeviceError(f"the {what} must be a P-256 public key (65-byte uncompressed point on the curve)")


def _current_link(s: Session, profile: dict) -> dict | None:
    """The link the board runs: /link.json's, else its profile's."""
    try:
        return json.loads(s.run("print(open('/link.json').read())"))
    except (DeviceError, ValueError):
        return profile.get("link")


def _board_path(flash_dir: str, rel: str) -> str:
    return (flash_dir if flash_dir.startswith("/") else "/" + flash_dir).rstrip("/") + "/" + rel


def _put_tls(s: Session, flash_dir: str, tls: TlsBundle) -> list[str]:
    """The TLS files written beside their final names, their hashes checked on the board, then renamed into
    place (the running link names none of them: their names are their content's)."""
    import hashlib

    d = _board_path(flash_dir, TLS_DIR)
    s.run(_TLS_DIR % (d.rsplit("/", 1)[0] or "/", d))
    paths = {role: _board_path(flash_dir, rel) for role, rel in tls.names().items()}
    for role, path in paths.items():
        s.write_file(path + ".new", tls.files[role])
    got = s.hashes(*[p + ".new" for p in paths.values()])
    for role, path in paths.items():
        if got.get(path + ".new") != hashlib.sha256(tls.files[role]).hexdigest():
            raise DeviceError(f"{path}: the board holds other bytes than were sent; the link is unchanged")
    s.run(_RENAME % ([(p + ".new", p) for p in paths.values()],))
    return list(paths.values())


def provision(port: str, headend_pub: bytes | None, link: dict | None,
              register: Callable[[bytes, bytes], object] | None = None, restart: bool = True,
              firmware_pub: bytes | None = None, tls: TlsBundle | None = None) -> Provisioned:
    """Provision the board on `port`; `register(device_id, public_key)` enters it into the head-end's store.
    firmware_pub: the firmware-signing public key to install; tls: the files of a TLS link (on `link`, or on
    the TCP link the board has)."""
    _check_point("head-end key", headend_pub)
    _check_point("firmware key", firmware_pub)
    with Session.open(port) as s:
        try:
            profile = json.loads(s.run(_PATH + "print(open(_s + '/board.json').read())"))
        except (DeviceError, ValueError):
            raise DeviceError(f"the board on {port} has no firmware deployed (no board profile): run "
                              "`meterkit device deploy` first") from None
        if tls is not None:
            link = link if link is not None else _current_link(s, profile)
            if link is None:
                raise DeviceError("TLS needs a TCP link: give --tcp or --wifi (the board has no link yet)")
            link = {**link, "tls": tls.section()}
        if link is not None:
            link = console_link(profile, link)
            check_link(profile, link)
        dev, pub, created, name = s.eval_code(_IDENTITY % ((headend_pub or b"").hex(), (firmware_pub or b"").hex()))
        result = Provisioned(bytes.fromhex(dev), bytes.fromhex(pub), created, name, link,
                             firmware_key=firmware_pub is not None)
        if tls is not None:
            result.tls_files = _put_tls(s, profile["flash_dir"], tls)
        if link is not None:
            s.run(_WRITE_LINK % (json.dumps(link),))
        if tls is not None:
            d = _board_path(profile["flash_dir"], TLS_DIR)
            s.run(_PRUNE_TLS % (d, d, result.tls_files, d))
        if register is not None:
            register(result.device_id, result.public_key)
        if restart:
            result.booted = s.restart(expect=r"meterkit: firmware")
    return result
