# meter/fwupdate.py with the Unix port's partitions and bootloader (sim/ota.py): the manifest's checks, the
# chunked write, activation, the trial boot's confirmation, rollback, and a power cut at every write.
import hashlib
import struct

from mptest import TempDir, contains, eq, ne

from meter import cbor, cose, events, p256
from meter.fwupdate import IDLE, RECEIVING, TRIAL, Updater, class_id, install_key
from meter.messages import (FW_IMAGE, FW_VENDOR, FWM_CLASS, FWM_DIGEST, FWM_FORMAT, FWM_PAYLOAD, FWM_SEQ,
                            FWM_SIZE, FWM_VENDOR, FWM_VERSION, RESULT_BAD_ARGS, RESULT_OK, RESULT_REJECTED)
from sim import ota

FW_D = bytes(range(7, 39))  # the firmware-signing key of these tests
FW_PUB = p256.public_key(FW_D)
OTHER_D = bytes(range(9, 41))  # the operator's key, say: not the firmware key
BOARD = class_id("unix-sim")
CHUNK = 1024


def image(version, extra=b"", boot_code=None):
    """An MKIM archive: fwimage.py (VERSION, or boot_code) and a padding file."""
    files = [("fwimage.py", (boot_code or "VERSION = %r\n" % version).encode()), ("pad.bin", extra)]
    out = bytearray(b"MKIM" + struct.pack("<H", len(files)))
    for name, data in files:
        out += bytes((len(name),)) + name.encode() + struct.pack("<I", len(data)) + data
    return bytes(out)


def manifest(img, seq, version="v2", board=BOARD, key=FW_D, size=None, fmt=FW_IMAGE):
    m = {FWM_FORMAT: 1, FWM_SEQ: seq, FWM_VENDOR: FW_VENDOR, FWM_CLASS: board,
         FWM_DIGEST: hashlib.sha256(img).digest(), FWM_SIZE: len(img) if size is None else size,
         FWM_PAYLOAD: fmt, FWM_VERSION: version}
    pub = p256.public_key(key)
    return cose.sign1(key, hashlib.sha256(pub).digest()[:8], cbor.encode(m))


class Board:
    """A flash directory, booted by the sim bootloader; its updater and the events it raised."""

    def __init__(self, d):
        self.d = d
        self.events = []
        self.boot()

    def boot(self):
        self.running, self.on_trial = ota.choose(self.d)
        self.image = ota.image_bytes(self.d, self.running)
        self.u = Updater(ota.SimOta(self.d, self.running), self.d, BOARD, self._event)
        got = self.u.booted()
        if got is not None:
            self._event(*got)

    def _event(self, code, value):
        self.events.append((code, value))

    def codes(self):
        return [c for c, _ in self.events]


def deliver(b, img, man, upto=None):
    """The head-end's side: the manifest, then every chunk (resending what the meter had), then activation."""
    got = [b.u.manifest(man)]
    for off in range(0, len(img) if upto is None else upto, CHUNK):
        got.append(b.u.chunk(off, img[off:off + CHUNK]))
    got.append(b.u.activate())
    return got


def fresh(d):
    install_key(d, FW_PUB)
    return Board(d)


def test_good_update_boots_on_trial_then_confirms():
    img = image("v2", b"x" * 5000)
    with TempDir("fw") as d:
        b = fresh(d)
        eq(b.running, "ota_0", "the factory image")
        got = deliver(b, img, manifest(img, 2))
        eq([r for r, _ in got], [RESULT_OK] * len(got), "every step answered 0: %r" % (got,))
        eq(got[-2][1], "have %d" % len(img), "the last chunk")
        eq(b.u.phase, TRIAL, "set to boot")
        contains(events.FW_ACTIVATED, b.codes())
        b.boot()
        eq((b.running, b.on_trial, b.image), ("ota_1", True, img), "the bootloader runs the new image on trial")
        eq(b.u.running_version(), "v2", "its version is reported from the first boot")
        b.u.confirm()
        contains(events.FW_CONFIRMED, b.codes())
        b.boot()
        eq((b.running, b.on_trial, b.u.phase), ("ota_1", False, IDLE), "confirmed: it stays")
        eq(b.u.running_version(), "v2", "and says so")
        again = b.u.manifest(manifest(img, 2))
        eq(again[0], RESULT_REJECTED, "the same sequence number again: anti-rollback")


def test_refusals_change_nothing():
    img = image("v2", b"y" * 3500)
    with TempDir("fw") as d:
        b = fresh(d)
        cases = [(manifest(img, 2, key=OTHER_D), "bad signature"),
                 (manifest(img, 2, board="esp32-c3-nopsram/xtensawin"), "wrong board"),
                 (manifest(img, 0), "not above 0"),
                 (manifest(img, 2)[:-3] + b"\x00\x00\x00", "bad signature")]
        for man, why in cases:
            r, reason = b.u.manifest(man)
            eq(r, RESULT_REJECTED, why)
            contains(why, reason)
            eq(b.u.phase, IDLE, why + ": nothing started")
        eq(b.codes(), [events.FW_REFUSED] * len(cases), "each refusal logged")
        # a truncated delivery is never activated; a tampered one fails its digest and is abandoned
        eq(deliver(b, img, manifest(img, 3), upto=2048)[-1][0], RESULT_REJECTED, "truncated: incomplete")
        eq(b.u.phase, RECEIVING, "... and the delivery can resume")
        bad = img[:2500] + b"Z" + img[2501:]
        r = deliver(b, bad, manifest(img, 3))
        eq(r[-1][0], RESULT_REJECTED, "tampered payload")
        contains("digest mismatch", r[-1][1])
        eq(b.u.phase, IDLE, "abandoned")
        eq(b.u.chunk(0, img[:CHUNK])[0], RESULT_REJECTED, "no chunk without a manifest")
        b.u.manifest(manifest(img, 3))
        eq(b.u.chunk(2048, img[2048:3072])[1], "rejected: expected offset 0", "in order only")
        for off in (0, 1024, 2048):
            b.u.chunk(off, img[off:off + CHUNK])
        eq(b.u.chunk(3072, img[:1100])[0], RESULT_BAD_ARGS, "across a block")
        eq(b.u.chunk(3072, img[:CHUNK])[0], RESULT_BAD_ARGS, "beyond the payload's %d bytes" % len(img))
        b.boot()
        eq((b.running, b.image), ("ota_0", None), "the meter boots the image it had")


def test_crash_at_boot_rolls_back():
    bad = image("v3", b"", boot_code="raise RuntimeError('boom')\n")
    with TempDir("fw") as d:
        b = fresh(d)
        eq(deliver(b, bad, manifest(bad, 5, "v3"))[-1][0], RESULT_OK, "a signed image is activated")
        running, trial = ota.choose(d)
        eq((running, trial), ("ota_1", True), "booted on trial")
        try:
            ota.mount(d, running)
            raise AssertionError("the crash image booted")
        except RuntimeError:
            pass  # the board resets here (sim/boot.py: exit status 3)
        b.boot()
        eq(b.running, "ota_0", "the next boot rolls it back")
        contains(events.FW_ROLLED_BACK, b.codes())
        eq((b.u.phase, b.u.running_version()), (IDLE, None), "the old image runs and says so")
        eq(b.u.manifest(manifest(bad, 5, "v3"))[0], RESULT_REJECTED, "its sequence number is burnt")


def test_power_cut_at_every_write_resumes():
    img = image("v2", b"p" * 4500)  # 5 chunks over 2 blocks
    man = manifest(img, 7)
    cut = 0
    while True:
        with TempDir("fwcut") as d:
            b = fresh(d)
            ota.SimPartition.cut_after = cut
            try:
                deliver(b, img, man)
                b.boot()
                b.u.confirm()
                done = True
            except ota.PowerCut:
                done = False
            ota.SimPartition.cut_after = None
            for _ in range(3):  # boot again after the cut; finish what is left; always a good image
                b.boot()
                ne(b.image is not None and b.image != img, True, "cut %d: never a damaged image" % cut)
                if b.u.trial:
                    b.u.confirm()
                elif b.u.running_version() != "v2":
                    got = deliver(b, img, man)
                    eq(got[-1][0], RESULT_OK, "cut %d: the delivery resumes: %r" % (cut, got))
            eq((b.running, b.u.running_version(), b.image), ("ota_1", "v2", img), "cut %d: updated" % cut)
        if done:
            break
        cut += 1
    eq(cut >= 8, True, "cuts at every erase, write, set_boot and mark_valid (%d)" % cut)


def test_an_activation_sent_again_is_answered_again():
    # its first answer lost (a cut after set_boot, a dropped link): the head-end sends op 15 again, before the
    # restart and from the trial boot; both are answered OK, and neither undoes or repeats anything
    img = image("v2", b"r" * 1500)
    with TempDir("fw") as d:
        b = fresh(d)
        eq(deliver(b, img, manifest(img, 4))[-1][0], RESULT_OK, "activated")
        again = b.u.activate()
        eq((again[0], b.u.phase, b.u.trial), (RESULT_OK, TRIAL, False), "before the restart: %r" % (again,))
        contains("restarting once acknowledged", again[1])
        b.boot()
        eq((b.running, b.on_trial), ("ota_1", True), "the trial boot")
        again = b.u.activate()
        eq((again[0], b.u.phase, b.u.trial), (RESULT_OK, TRIAL, True), "on trial: %r" % (again,))
        contains("running on trial", again[1])
        eq(b.codes().count(events.FW_ACTIVATED), 1, "activated once")
        b.u.confirm()
        eq(b.u.activate()[0], RESULT_REJECTED, "confirmed: nothing is in progress")
