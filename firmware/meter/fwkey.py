# Rotating the firmware-signing key (docs/firmware-updates.md, "Keys"): an update whose manifest names payload
# format FW_KEY carries the next firmware public key, 65 bytes. It goes through meter.fwupdate's manifest check
# like an image: signed by the CURRENT firmware key (so only that key can name its successor; the head-end's key
# signs commands, never manifests, so a compromised concentrator cannot install a key), for this board, with a
# sequence number above every one activated (a rotation uses its number up: neither it nor an older image or
# rotation can be replayed). Delivered by the same ops; loaded only when a key update is delivered or finished.
#
# The 65 bytes are held in the update state (fw-state), not in a partition: KeySlot is the partition the
# Updater's chunk() writes and digest() reads. Activation, after the digest: the point must be on P-256, then
#   1. the intent saved: phase KEYING, the new key held, the floor at the rotation's sequence number;
#   2. install_key (the firmware-pub A/B store: a cut leaves the old key or the new, never none);
#   3. event FW_KEY_INSTALLED (durable);
#   4. phase IDLE, the rotation remembered (`done`: op 15 again is answered again, not refused).
# A power cut before 1 leaves the delivery (op 15 again finishes it); after it, booted() does 2-4 at the next
# boot, before any manifest is looked at. No restart: the next manifest is checked against the new key.
import hashlib

from meter import events
from meter.fwupdate import IDLE, KEY_TARGET, KEYING, install_key
from meter.messages import FWM_SEQ, RESULT_OK

KEY_LEN = 65


def kid_hex(pub):
    return "".join(["%02x" % x for x in hashlib.sha256(pub).digest()[:8]])


class KeySlot:
    """The target of a key delivery: the bytes the update state holds (Updater.held)."""

    name = KEY_TARGET
    size = KEY_LEN

    def __init__(self, u):
        self.u = u

    def erase(self, block):
        self.u.held = b""

    def write(self, block, offset, data):
        self.u.held = self.u.held[:offset] + bytes(data)

    def read(self, block, offset, buf):
        got = self.u.held[offset:offset + len(buf)]
        buf[:len(got)] = got
        for i in range(len(got), len(buf)):
            buf[i] = 0xFF


def activate(u, m):
    """OP_FW_ACTIVATE of a key delivery whose size, digest and manifest checked out -> (result, reason)."""
    from meter import p256

    key = bytes(u.held)
    if p256.decode_point(key) is None:
        return u._abandon("the payload is not a P-256 public key on the curve")
    if key == u._key():
        return u._abandon("that key is the firmware key already")
    u.phase, u.floor, u.manifest_bytes, u.offset, u._m = KEYING, m[FWM_SEQ], b"", 0, None
    u._save()  # 1: from here on the rotation completes, across any power cut
    finish(u, u.event)
    return answer(u)


def finish(u, event=None):
    """Steps 2-4 of a rotation whose intent is saved (phase KEYING); idempotent, so a cut anywhere in it is
    finished again at the next boot. With `event`, the event is raised before the state says done (a cut
    between repeats it, never loses it); without (at boot, before the hello), it is returned for the caller."""
    key = u.held
    if u._key() != key:
        install_key(u.flash_dir, key)
    ev = (events.FW_KEY_INSTALLED, kid_hex(key))
    if event is not None:
        event(*ev)
    u.phase, u.done, u.target, u.held, u._m = IDLE, u.floor, "", b"", None
    u._save()
    return ev


def answer(u):
    """The answer to an activation that installed the key (again: its answer may have been lost to a cut)."""
    return RESULT_OK, "firmware key %s installed (seq %d): manifests signed by the old key are refused" % (
        kid_hex(u._key()), u.done)
