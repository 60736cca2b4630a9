# Signed firmware updates (docs/firmware-updates.md). Loaded with the first update command, or at boot when an
# update left state behind ("fw-state"): a meter that is never updated never holds this module in RAM.
#
#   OP_FW_MANIFEST  the manifest: a COSE_Sign1 (ES256) by the firmware-signing key, which provisioning installs
#                   ("firmware-pub") and which is not the head-end's: the operator's key sends the commands, only
#                   the firmware key says what may run. Its fields are RFC 9124's (meter.messages FWM_*):
#                   sequence number, vendor and class id, payload digest and size, format, version.
#                   Refused unless the signature verifies, the class id names this board and arch, and the
#                   sequence number is above every one this meter has activated (anti-rollback).
#   OP_FW_CHUNK     payload bytes at an offset, in order: written to the next OTA partition, the offset
#                   persisted after each (A/B store): a link drop, a reboot or a power cut resumes where it was;
#                   a chunk that is had already is answered again, one beyond the offset is refused with it.
#   OP_FW_ACTIVATE  the manifest verified again, the size and the SHA-256 of what the partition holds checked,
#                   then set_boot; the meter restarts once its answer is acknowledged (meter.app).
#
# The first boot of the new image is a trial: it is confirmed (mark_app_valid_cancel_rollback) only once it has
# metered and its first reading is acknowledged (meter.app calls confirm()); a restart before that makes the
# bootloader run the previous image again, which this module then reports (event FW_ROLLED_BACK).
#
# hw.ota (meter.hal on an ESP32, sim.ota on the Unix port, meter.appslots on a board with A/B application slots):
# format (the payload format it takes), running() -> partition name, next_update(), partition(name) -> a
# partition (name, size, erase(block), write(block, offset, data), read(block, offset, buf)), set_boot(partition),
# mark_valid(). Pure otherwise: runs under CPython too.
import hashlib

from meter import cbor, cose, events
from meter.messages import (FW_BLOCK, FW_IMAGE, FW_KEY, FW_MANIFEST_MAX, FW_VENDOR, FWM_CLASS, FWM_DIGEST,
                            FWM_FORMAT, FWM_PAYLOAD, FWM_SEQ, FWM_SIZE, FWM_VENDOR, FWM_VERSION, RESULT_BAD_ARGS,
                            RESULT_OK, RESULT_REJECTED, UINT64_MAX, is_uint)
from meter.store import Store

IDLE = 0
RECEIVING = 1  # a manifest was taken; payload chunks are being written to the target partition
TRIAL = 2  # the image was set to boot; its first boot has not confirmed it yet
KEYING = 3  # a firmware-key rotation verified and being installed (meter.fwkey)
KEY_TARGET = "firmware-key"  # the target of a key rotation's payload: the state itself (meter.fwkey.KeySlot)
VERSION_MAX = 32  # characters of a version text
HASH_BUF = 512  # bytes read at a time to hash the payload (the update path's one buffer beside the chunk)
# meter.store key of each state field (a CBOR map)
_PHASE, _MANIFEST, _OFFSET, _FLOOR, _VERSION, _TARGET, _HELD, _DONE = 1, 2, 3, 4, 5, 6, 7, 8
_ARCHS = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa",
          "xtensawin", "rv32imc")


def native_arch():
    """The .mpy native architecture of this interpreter (sys.implementation._mpy), 'host' under CPython."""
    import sys

    mpy = getattr(sys.implementation, "_mpy", None)
    if mpy is None:
        return "host"
    i = (mpy >> 10) & 0x0F
    return _ARCHS[i] if i < len(_ARCHS) else "arch%d" % i


def class_id(board_name):
    """The class id an image for this meter names: '<board profile name>/<native arch>'."""
    return "%s/%s" % (board_name, native_arch())


class ManifestError(ValueError):
    pass


def _key_store(flash_dir):
    return Store(flash_dir, "firmware-pub", max_payload=80)


def install_key(flash_dir, pub65):
    """Provisioning (or a firmware-key rotation the current image carries out): the firmware-signing public key."""
    from meter import p256

    if p256.decode_point(pub65) is None:
        raise ValueError("the firmware key must be a 65-byte uncompressed P-256 public key on the curve")
    _key_store(flash_dir).save(bytes(pub65))


def parse_manifest(cose_bytes, key_pub):
    """The manifest's fields {FWM_*: value} once its signature verifies with key_pub; ManifestError says why not."""
    if key_pub is None:
        raise ManifestError("no firmware key installed")
    kid = hashlib.sha256(key_pub).digest()[:8]
    try:
        _kid, payload = cose.verify1(cose_bytes, lambda k: key_pub if k == kid else None, max_len=FW_MANIFEST_MAX)
    except cose.UnknownKid:
        raise ManifestError("bad signature: not signed by this meter's firmware key")
    except cose.BadSignature:
        raise ManifestError("bad signature")
    except cose.COSEError as e:
        raise ManifestError("not a COSE_Sign1 manifest: %s" % e)
    try:
        m = cbor.decode(payload, max_len=FW_MANIFEST_MAX, max_depth=2, max_items=32)
    except cbor.DecodeError as e:
        raise ManifestError("manifest is not deterministic CBOR: %s" % e)
    if not isinstance(m, dict) or len(m) != 8 or m.get(FWM_FORMAT) != 1:
        raise ManifestError("not a format 1 manifest with exactly its 8 fields")
    if not (is_uint(m.get(FWM_SEQ), UINT64_MAX) and is_uint(m.get(FWM_SIZE), 0xFFFFFFFF)
            and isinstance(m.get(FWM_VENDOR), str) and isinstance(m.get(FWM_CLASS), str)
            and isinstance(m.get(FWM_DIGEST), bytes) and len(m[FWM_DIGEST]) == 32
            and isinstance(m.get(FWM_VERSION), str) and 0 < len(m[FWM_VERSION]) <= VERSION_MAX):
        raise ManifestError("manifest fields of the wrong type")
    return m


class Updater:
    """ota: hw.ota; board_class: class_id(board name); event(code, value): the meter's event log."""

    def __init__(self, ota, flash_dir, board_class, event):
        self.ota = ota
        self.flash_dir = flash_dir
        self.board_class = board_class
        self.event = event
        self._store = Store(flash_dir, "fw-state", max_payload=FW_MANIFEST_MAX + 256)  # + a key's 65 bytes
        got = self._store.load()
        st = {}
        if got is not None:
            try:
                st = cbor.decode(got[1])
            except cbor.DecodeError:
                st = {}
        self.phase = st.get(_PHASE, IDLE)
        self.manifest_bytes = st.get(_MANIFEST, b"")
        self.offset = st.get(_OFFSET, 0)
        self.floor = st.get(_FLOOR, 0)  # the highest sequence number ever activated (anti-rollback)
        self.version = st.get(_VERSION)  # the confirmed image's version text (None: the one flashed)
        self.target = st.get(_TARGET, "")  # the partition being written, or on trial
        self.held = st.get(_HELD, b"")  # a key rotation's payload (meter.fwkey)
        self.done = st.get(_DONE, 0)  # the sequence number of the key rotation last installed (meter.fwkey)
        self.trial = False  # this boot runs an image on trial (confirm() once it has metered and reported)
        self._m = None

    # -- state ----------------------------------------------------------------------------------------------
    def _save(self):
        st = {_PHASE: self.phase, _MANIFEST: self.manifest_bytes, _OFFSET: self.offset, _FLOOR: self.floor,
              _TARGET: self.target}
        if self.version is not None:
            st[_VERSION] = self.version
        if self.held:
            st[_HELD] = self.held
        if self.done:
            st[_DONE] = self.done
        self._store.save(cbor.encode(st))

    def _key(self):
        got = _key_store(self.flash_dir).load()
        return got[1] if got is not None else None

    def _refuse(self, result, why):
        self.event(events.FW_REFUSED, why[:100])
        return result, ("rejected: " + why) if result == RESULT_REJECTED else why

    def _check(self, cose_bytes):
        """The manifest's fields if this meter may take it, else ManifestError."""
        m = parse_manifest(cose_bytes, self._key())
        if m[FWM_VENDOR] != FW_VENDOR or m[FWM_CLASS] != self.board_class:
            raise ManifestError("wrong board: the image is for %s %s, this meter is %s"
                                % (m[FWM_VENDOR], m[FWM_CLASS], self.board_class))
        takes = getattr(self.ota, "format", FW_IMAGE)  # a partition image is never unpacked as files, nor back
        if m[FWM_PAYLOAD] not in (takes, FW_KEY):
            raise ManifestError("payload format %r: this board takes format %d (or a firmware key)"
                                % (m[FWM_PAYLOAD], takes))
        if m[FWM_PAYLOAD] == FW_KEY and m[FWM_SIZE] != 65:
            raise ManifestError("a firmware key is 65 bytes, not %d" % m[FWM_SIZE])
        if m[FWM_SEQ] <= self.floor:
            raise ManifestError("sequence number %d is not above %d (anti-rollback)" % (m[FWM_SEQ], self.floor))
        return m

    def running_version(self):
        """The version text this boot reports (None: the image flashed at the factory, meter.report's)."""
        if self.trial:
            return self._manifest()[FWM_VERSION]
        return self.version

    def _manifest(self):
        if self._m is None:
            self._m = parse_manifest(self.manifest_bytes, self._key())
        return self._m

    # -- commands ---------------------------------------------------------------------------------------------
    def manifest(self, cose_bytes):
        """OP_FW_MANIFEST -> (result, reason)."""
        if self.phase == TRIAL:
            return self._refuse(RESULT_REJECTED, "an update is on trial until its first reading is acknowledged")
        try:
            m = self._check(cose_bytes)
        except ManifestError as e:
            return self._refuse(RESULT_REJECTED, str(e))
        part = self._part(KEY_TARGET) if m[FWM_PAYLOAD] == FW_KEY else self.ota.next_update()
        if m[FWM_SIZE] > part.size or m[FWM_SIZE] == 0:
            return self._refuse(RESULT_REJECTED, "size %d does not fit partition %s (%d bytes)"
                                % (m[FWM_SIZE], part.name, part.size))
        if self.phase == RECEIVING and bytes(cose_bytes) == self.manifest_bytes and self.target == part.name:
            return RESULT_OK, "resume at offset %d" % self.offset
        self.phase, self.manifest_bytes, self.offset, self.target = RECEIVING, bytes(cose_bytes), 0, part.name
        self.done, self.held = 0, b""
        self._m = m
        self._save()
        return RESULT_OK, "offset 0 of %d into %s" % (m[FWM_SIZE], part.name)

    def chunk(self, offset, data):
        """OP_FW_CHUNK -> (result, reason): 'have N' once written (N: the bytes held), or why not."""
        if self.phase != RECEIVING:
            return RESULT_REJECTED, "rejected: no update in progress"
        n = len(data)
        if offset + n <= self.offset:
            return RESULT_OK, "have %d" % self.offset  # written before (an answer lost, a repeated attempt)
        if offset < self.offset < offset + n:  # had in part (chunked otherwise before): the rest is new
            data = data[self.offset - offset:]
            offset, n = self.offset, n - (self.offset - offset)
        if offset != self.offset:
            return RESULT_REJECTED, "rejected: expected offset %d" % self.offset
        size = self._manifest()[FWM_SIZE]
        if offset + n > size:
            return RESULT_BAD_ARGS, "bad arguments: beyond the payload's %d bytes" % size
        block, at = offset // FW_BLOCK, offset % FW_BLOCK
        if at + n > FW_BLOCK:
            return RESULT_BAD_ARGS, "bad arguments: a chunk may not cross a %d-byte block" % FW_BLOCK
        part = self._part(self.target)
        if at == 0:
            part.erase(block)
        part.write(block, at, data)
        self.offset = offset + n
        self._save()  # after the write: a power cut before this writes the same chunk again
        return RESULT_OK, "have %d" % self.offset

    def activate(self):
        """OP_FW_ACTIVATE -> (result, reason); RESULT_OK: set to boot, the meter restarts after the answer."""
        if self.phase != RECEIVING:
            if self.phase == IDLE and self.done:  # a key installed: this is its activation again
                from meter import fwkey

                return fwkey.answer(self)
            if self.phase == TRIAL:  # activated before (its answer lost to a cut): answered again
                m = self._manifest()
                return RESULT_OK, "activated %s (seq %d): %s" % (
                    m[FWM_VERSION], m[FWM_SEQ], "running on trial" if self.trial else "restarting once acknowledged")
            return RESULT_REJECTED, "rejected: no update in progress"
        try:
            m = self._check(self.manifest_bytes)  # the firmware key or the floor may have moved since
        except ManifestError as e:
            return self._abandon(str(e))
        if self.offset != m[FWM_SIZE]:
            return RESULT_REJECTED, "rejected: incomplete: have %d of %d bytes" % (self.offset, m[FWM_SIZE])
        part = self._part(self.target)
        if self.digest(part, m[FWM_SIZE]) != m[FWM_DIGEST]:
            return self._abandon("payload digest mismatch: the image is not the one the manifest signs")
        if self.target == KEY_TARGET:
            from meter import fwkey

            return fwkey.activate(self, m)
        try:
            self.ota.set_boot(part)
        except (OSError, ValueError) as e:  # e.g. A/B slots: no room to unpack; nothing was switched
            return self._refuse(RESULT_REJECTED, "cannot set it to boot: %s" % e)
        # set to boot before the state says so: a power cut in between boots the image, and booted() sees the
        # target running and takes it as the trial it is
        self.phase, self.floor = TRIAL, m[FWM_SEQ]
        self._save()
        self.event(events.FW_ACTIVATED, m[FWM_SEQ])
        return RESULT_OK, "activated %s (seq %d): restarting once this is acknowledged" % (m[FWM_VERSION], m[FWM_SEQ])

    def _part(self, name):
        """A partition by name, or for KEY_TARGET the key slot: a key rotation's payload is held in the update
        state (meter.fwkey)."""
        if name == KEY_TARGET:
            from meter.fwkey import KeySlot

            return KeySlot(self)
        return self.ota.partition(name)

    def _abandon(self, why):
        self.phase, self.manifest_bytes, self.offset, self.held, self._m = IDLE, b"", 0, b"", None
        self._save()
        return self._refuse(RESULT_REJECTED, why)

    @staticmethod
    def digest(part, size):
        """SHA-256 of the first `size` bytes of a partition, read HASH_BUF bytes at a time."""
        h = hashlib.sha256()
        buf = bytearray(HASH_BUF)
        mv = memoryview(buf)
        pos = 0
        while pos < size:
            n = min(HASH_BUF, size - pos)
            part.read(pos // FW_BLOCK, pos % FW_BLOCK, mv[:n])
            h.update(mv[:n])
            pos += n
        return h.digest()

    # -- boot and confirmation --------------------------------------------------------------------------------
    def booted(self):
        """At boot: a trial image running (self.trial), or the bootloader having rolled one back: then the event
        to raise, (FW_ROLLED_BACK, seq) (the meter raises it once its hello is out); a key rotation cut short
        finished: (FW_KEY_INSTALLED, kid); else None."""
        if self.phase == KEYING:  # a key rotation's intent was saved, then the power went: finish it
            from meter import fwkey

            return fwkey.finish(self)
        running = self.ota.running()
        if self.phase == RECEIVING and running == self.target and self.offset:
            self.phase = TRIAL  # set to boot, then the power went before the state said so
            self.floor = max(self.floor, self._manifest()[FWM_SEQ])
            self._save()
        if self.phase != TRIAL:
            return None
        if running == self.target:
            self.trial = True
            return None
        seq = self._manifest()[FWM_SEQ]
        self.phase, self.manifest_bytes, self.offset, self._m = IDLE, b"", 0, None
        self._save()
        return events.FW_ROLLED_BACK, seq

    def confirm(self):
        """The trial image metered and reported: no rollback from here on."""
        if not self.trial:
            return
        version = self._manifest()[FWM_VERSION]
        try:
            self.ota.mark_valid()
        except OSError:
            pass  # a bootloader without rollback (ESP-IDF's option off): nothing to cancel
        self.trial = False
        self.phase, self.version, self.manifest_bytes, self.offset, self._m = IDLE, version, b"", 0, None
        self._save()
        self.event(events.FW_CONFIRMED, version)


REBOOT_AFTER_S = 30  # the restart into the new image waits this long (uptime s) at most for the answer's ack


def handle(meter, counter, op, args):
    """An update command (meter.commands) -> the response (seq, frame); activation restarts the meter once
    its answer is acknowledged."""
    from meter.messages import A_DATA, A_MANIFEST, A_OFFSET, OP_FW_ACTIVATE, OP_FW_MANIFEST

    respond = meter.reporter.response
    u = meter.updater()
    if u is None:
        return respond(counter, RESULT_REJECTED, "rejected: this board has no OTA partitions")
    if op == OP_FW_MANIFEST:
        r = u.manifest(args[A_MANIFEST])
    elif op == OP_FW_ACTIVATE:
        r = u.activate()
    else:
        r = u.chunk(args[A_OFFSET], args[A_DATA])
    answer = respond(counter, r[0], r[1])
    if op == OP_FW_ACTIVATE and r[0] == RESULT_OK and u.phase == TRIAL and not u.trial:  # an image set to boot
        meter.restart_at(meter.hw.monotonic_s() + REBOOT_AFTER_S, answer[0])
    return answer
