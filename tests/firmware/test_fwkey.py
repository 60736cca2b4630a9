# Rotating the firmware-signing key (meter/fwkey.py through meter/fwupdate.py): only the current firmware key
# can install its successor, a rotation uses up its sequence number, a bad payload keeps the old key, and a
# power cut at every write leaves exactly one valid key (the old or the new) with the delivery able to resume.
import hashlib

from mptest import TempDir, contains, eq, ne, raises
from test_fwupdate import BOARD, FW_D, FW_PUB, OTHER_D, deliver, fresh, image, manifest

from meter import cbor, cose, events, p256
from meter.fwupdate import IDLE, RECEIVING, TRIAL, install_key
from meter.messages import (FW_KEY, FW_VENDOR, FWM_CLASS, FWM_DIGEST, FWM_FORMAT, FWM_PAYLOAD, FWM_SEQ, FWM_SIZE,
                            FWM_VENDOR, FWM_VERSION, RESULT_BAD_ARGS, RESULT_OK, RESULT_REJECTED)
from meter.store import Store
from sim import ota

NEXT_D = bytes(range(40, 72))  # the firmware key that follows FW_D
NEXT_PUB = p256.public_key(NEXT_D)
THIRD_PUB = p256.public_key(bytes(range(80, 112)))


def kid(pub):
    return "".join(["%02x" % x for x in hashlib.sha256(pub).digest()[:8]])


def rotation(new_pub, seq, key=FW_D, board=BOARD, size=65, digest_of=None):
    """A key-rotation manifest (payload format FW_KEY) over new_pub, signed with `key`."""
    m = {FWM_FORMAT: 1, FWM_SEQ: seq, FWM_VENDOR: FW_VENDOR, FWM_CLASS: board,
         FWM_DIGEST: hashlib.sha256(new_pub if digest_of is None else digest_of).digest(), FWM_SIZE: size,
         FWM_PAYLOAD: FW_KEY, FWM_VERSION: "key " + kid(new_pub)}
    return cose.sign1(key, hashlib.sha256(p256.public_key(key)).digest()[:8], cbor.encode(m))


def held_key(d):
    got = Store(d, "firmware-pub", max_payload=80).load()
    return got[1] if got is not None else None


def key_events(b):
    return [v for c, v in b.events if c == events.FW_KEY_INSTALLED]


def test_a_rotation_installs_the_next_key_and_only_it_signs_after():
    with TempDir("fwkey") as d:
        b = fresh(d)
        got = deliver(b, NEXT_PUB, rotation(NEXT_PUB, 3))
        eq([r for r, _ in got], [RESULT_OK] * 3, "manifest, one chunk, activation: %r" % (got,))
        contains("firmware key %s installed (seq 3)" % kid(NEXT_PUB), got[-1][1])
        eq((held_key(d), b.u.phase, key_events(b)), (NEXT_PUB, IDLE, [kid(NEXT_PUB)]), "installed, event raised")
        ne(b.u.phase, TRIAL, "nothing set to boot: no restart (fwupdate.handle restarts for TRIAL only)")
        eq(b.u.activate(), got[-1], "op 15 again (its answer lost to a cut) is answered again, not refused")
        img = image("v4", b"n" * 1500)
        r = b.u.manifest(manifest(img, 4, "v4"))
        eq(r[0], RESULT_REJECTED, "an image signed by the old key, at once: no restart needed")
        contains("bad signature", r[1])
        for man, why in ((rotation(NEXT_PUB, 5), "bad signature"),  # the old key cannot rotate again
                         (rotation(THIRD_PUB, 3, key=NEXT_D), "anti-rollback"),  # the rotation's number is used
                         (manifest(img, 2, "v4", key=NEXT_D), "anti-rollback")):
            r = b.u.manifest(man)
            eq(r[0], RESULT_REJECTED, why)
            contains(why, r[1])
        eq(b.u.activate()[0], RESULT_OK, "refused manifests leave the rotation's own answer in place")
        eq(deliver(b, img, manifest(img, 4, "v4", key=NEXT_D))[-1][0], RESULT_OK, "the new key's image lands")
        again = b.u.activate()
        eq(again[0], RESULT_OK, "op 15 again")
        contains("activated v4 (seq 4)", again[1])  # a new delivery ends the rotation's re-answer
        b.boot()
        b.u.confirm()
        b.boot()
        eq((b.running, b.u.running_version(), held_key(d)), ("ota_1", "v4", NEXT_PUB), "v4 runs, the new key kept")


def test_only_the_current_firmware_key_can_rotate_it():
    with TempDir("fwkey") as d:
        b = fresh(d)
        cases = [(rotation(NEXT_PUB, 3, key=OTHER_D), "bad signature"),  # the head-end's (operator's) key
                 (rotation(p256.public_key(OTHER_D), 3, key=OTHER_D), "bad signature"),  # naming itself
                 (rotation(NEXT_PUB, 3, board="esp32-nopsram/xtensawin"), "wrong board"),
                 (rotation(NEXT_PUB, 0), "not above 0"),
                 (rotation(NEXT_PUB, 3, size=64), "65 bytes")]
        for man, why in cases:
            r = b.u.manifest(man)
            eq(r[0], RESULT_REJECTED, why)
            contains(why, r[1])
            eq(b.u.phase, IDLE, why + ": nothing started")
        eq(held_key(d), FW_PUB, "the key is the one provisioned")
        eq(b.codes(), [events.FW_REFUSED] * len(cases), "each refusal logged")
        # an image of seq 2 activated: a rotation must now be above it too
        img = image("v2", b"q" * 900)
        eq(deliver(b, img, manifest(img, 2))[-1][0], RESULT_OK, "an image lands")
        b.boot()
        b.u.confirm()
        r = b.u.manifest(rotation(NEXT_PUB, 2))
        contains("anti-rollback", r[1])
        eq(held_key(d), FW_PUB, "kept")


def test_a_bad_key_payload_is_refused_and_the_old_key_kept():
    off_curve = NEXT_PUB[:-1] + bytes([NEXT_PUB[-1] ^ 1])
    with TempDir("fwkey") as d:
        b = fresh(d)
        r = deliver(b, off_curve, rotation(NEXT_PUB, 3))  # the bytes sent are not the ones signed
        contains("digest mismatch", r[-1][1])
        eq((b.u.phase, b.u.held, held_key(d)), (IDLE, b"", FW_PUB), "abandoned, old key kept")
        r = deliver(b, off_curve, rotation(off_curve, 3))  # signed, but no key: a signing mistake
        eq(r[-1][0], RESULT_REJECTED, "not on the curve")
        contains("not a P-256 public key", r[-1][1])
        r = deliver(b, FW_PUB, rotation(FW_PUB, 3))
        contains("the firmware key already", r[-1][1])
        eq((b.u.phase, held_key(d), key_events(b)), (IDLE, FW_PUB, []), "old key kept, no key event")
        r = deliver(b, NEXT_PUB, rotation(NEXT_PUB, 3), upto=0)  # manifest and activation, no chunk
        contains("incomplete: have 0 of 65", r[-1][1])
        eq(b.u.phase, RECEIVING, "the delivery waits for its chunk")
        eq(b.u.chunk(0, NEXT_PUB[:40]), (RESULT_OK, "have 40"), "in two chunks")
        eq(b.u.chunk(40, NEXT_PUB[40:] + b"\x00")[0], RESULT_BAD_ARGS, "beyond the 65 bytes")
        eq(b.u.chunk(40, NEXT_PUB[40:]), (RESULT_OK, "have 65"), "the rest")
        eq(b.u.activate()[0], RESULT_OK, "then it is installed")
        eq(held_key(d), NEXT_PUB, "new key")
        raises(ValueError, install_key, d, off_curve)
        eq(held_key(d), NEXT_PUB, "provisioning's install refuses it too")


class _Cut:
    """Store.save with the power going at the n-th slot write, that slot torn (half of it written)."""

    left = None
    save = Store.save

    @staticmethod
    def torn_save(store, payload):
        if _Cut.left is None:
            return _Cut.save(store, payload)
        if _Cut.left > 0:
            _Cut.left -= 1
            return _Cut.save(store, payload)
        _Cut.left = None
        _Cut.save(store, payload)
        path = store.paths[store._slot]
        with open(path, "rb") as f:
            blob = f.read()
        with open(path, "wb") as f:
            f.write(blob[:len(blob) // 2])
        raise ota.PowerCut("power cut writing %s" % path)


def test_a_power_cut_at_every_write_leaves_one_key_and_the_rotation_resumes():
    man = rotation(NEXT_PUB, 3)
    cut = 0
    Store.save = _Cut.torn_save
    try:
        while True:
            with TempDir("fwkeycut") as d:
                b = fresh(d)
                _Cut.left = cut
                try:
                    deliver(b, NEXT_PUB, man)
                    done = True
                except ota.PowerCut:
                    done = False
                _Cut.left = None
                for _ in range(2):  # boot after the cut, resume what is left
                    k = held_key(d)
                    eq(k in (FW_PUB, NEXT_PUB), True, "cut %d: one valid key, the old or the new" % cut)
                    b.boot()
                    if held_key(d) != NEXT_PUB:
                        got = deliver(b, NEXT_PUB, man)
                        eq(got[-1][0], RESULT_OK, "cut %d: the delivery resumes: %r" % (cut, got))
                eq((held_key(d), b.u.phase), (NEXT_PUB, IDLE), "cut %d: rotated" % cut)
                eq(kid(NEXT_PUB) in key_events(b), True, "cut %d: the key event raised" % cut)
                img = image("v4", b"c" * 700)
                eq(b.u.manifest(manifest(img, 4, "v4"))[0], RESULT_REJECTED, "cut %d: old key refused" % cut)
                eq(b.u.manifest(manifest(img, 4, "v4", key=NEXT_D))[0], RESULT_OK, "cut %d: new key taken" % cut)
            if done:
                break
            cut += 1
    finally:
        Store.save = _Cut.save
        _Cut.left = None
    eq(cut, 5, "cuts at the manifest, the chunk, the intent, the key and the final state writes")
