"""A MicroPython child for the link tests: a script that runs the firmware's own identity, frame numbering,
outbox and link in the Unix port. Every such script starts with PREAMBLE, which provisions the meter when run
as `script init FLASH HEADEND_PUB_HEX` (prints its public key) and otherwise leaves `mode`, `flash` and
`ident` to the test's own part."""

from __future__ import annotations

import json
from pathlib import Path

from meterkit.device.toolchain import run_micropython

PREAMBLE = r'''
import sys
import time
import json
from meter import messages
from meter.identity import Identity
from meter.link import Link
from meter.transport import StreamTransport, TCPTransport, open_tty
from meter.outbox import Outbox
from meter.seqno import FrameSeq
from meter.store import Store

mode, flash = sys.argv[1], sys.argv[2]
ident = Identity(flash)
if mode == "init":
    import binascii
    ident.install_headend(binascii.unhexlify(sys.argv[3]))
    print(json.dumps({"pub": binascii.hexlify(ident.public_key).decode()}))
    sys.exit(0)
'''


def write_child(path: Path, body: str) -> Path:
    """The child script at `path`: PREAMBLE, then the test's own part."""
    path.write_text(PREAMBLE + body)
    return path


def provision(script: Path, flash: Path, headend_pub: bytes) -> bytes:
    """Run the child's init: the meter makes its key in `flash` and takes the head-end key; its public key."""
    r = run_micropython(script, "init", str(flash), headend_pub.hex(), timeout=120)
    assert r.returncode == 0, r.stderr
    return bytes.fromhex(json.loads(r.stdout.strip().splitlines()[-1])["pub"])
