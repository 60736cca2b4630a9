"""`meterkit device provision`: the board makes its own key, the host learns who it is, the board learns who
its head-end is and how to reach it, and the head-end's registry learns the meter.

1. On the board (through the REPL): meter.identity.Identity on the profile's flash_dir makes the device key on
   first use, from the board's own random source (on an ESP32 with the radio on: Espressif documents its RNG
   as true-random only then). The private key is written to the board's flash and never read back: the
   board prints its public key and device id only.
2. The head-end's public key is installed (Identity.install_headend: commands and acknowledgements are
   verified against it) and the link settings written to /link.json (a new file renamed into place), checked
   first on this host against the profile by meter.board.
3. The meter is registered in the head-end's store (`register`: the store's Registry.register_meter), by its
   public key: the device id is the key id, so a registry entry can never name the wrong key.
4. The board restarts into main.py with its new link.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from meterkit.device.session import DeviceError, Session

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
print(repr((binascii.hexlify(_i.device_id).decode(), binascii.hexlify(_i.public_key).decode(), _i.created,
            _b['name'])))
"""

_WRITE_LINK = """\
import os
with open('/link.json.new', 'w') as f:
    f.write(%r)
os.rename('/link.json.new', '/link.json')
"""


@dataclass
class Provisioned:
    device_id: bytes
    public_key: bytes
    created: bool  # the key was made now (False: the board had one already)
    board: str
    link: dict | None
    booted: str = ""


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


def provision(port: str, headend_pub: bytes | None, link: dict | None,
              register: Callable[[bytes, bytes], object] | None = None, restart: bool = True) -> Provisioned:
    """Provision the board on `port`; `register(device_id, public_key)` enters it into the head-end's store."""
    if headend_pub is not None and (len(headend_pub) != 65 or headend_pub[0] != 4):
        raise DeviceError("the head-end key must be a P-256 public key (65-byte uncompressed point)")
    with Session.open(port) as s:
        try:
            profile = json.loads(s.run(_PATH + "print(open(_s + '/board.json').read())"))
        except (DeviceError, ValueError):
            raise DeviceError(f"the board on {port} has no firmware deployed (no board profile): run "
                              "`meterkit device deploy` first") from None
        if link is not None:
            link = console_link(profile, link)
            check_link(profile, link)
        dev, pub, created, name = s.eval_code(_IDENTITY % ((headend_pub or b"").hex(),))
        result = Provisioned(bytes.fromhex(dev), bytes.fromhex(pub), created, name, link)
        if link is not None:
            s.run(_WRITE_LINK % (json.dumps(link),))
        if register is not None:
            register(result.device_id, result.public_key)
        if restart:
            result.booted = s.restart(expect=r"meterkit: firmware")
    return result
