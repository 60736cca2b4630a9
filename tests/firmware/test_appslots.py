# meter/appslots.py: signed updates of a stock-firmware board's A/B application slots, through meter.fwupdate's
# Updater as on the partitions (test_fwupdate.py): a good update on trial and confirmed, a power cut at every
# step, a failing trial rolled back, the wrong payload format, a slot file damaged before the switch.
import hashlib
import os
import struct

from cutfs import CutFiles, PowerCut
from mptest import TempDir, contains, eq
from test_fwupdate import BOARD, FW_PUB, deliver, manifest

from meter import appslots, events
from meter.appslots import AppSlots
from meter.fwupdate import IDLE, TRIAL, Updater, install_key
from meter.messages import FW_APP_FILES, FW_IMAGE, RESULT_OK, RESULT_REJECTED
from sim import ota

BOARD_JSON = b'{"name": "unix-sim", "tariff": {"calendar": "/app.a/calendar.json"}}'
V1 = {"meter/x.py": b"X = 1\n", "meter/y.py": b"Y = 1\n" * 50, "MANIFEST.json": b'{"id": "v1"}'}
V2 = {"meter/x.py": b"X = 2\n", "meter/z.py": b"Z = 2\n", "MANIFEST.json": b'{"id": "v2"}'}
SAME = ("meter/y.py",)  # the update sends no bytes for it: the running slot's file


def archive(files, same=(), base=V1):
    """An MKIH archive (meter.archive): files as data, `same` as references to the running slot's file."""
    names = list(files) + list(same)
    out = bytearray(b"MKIH" + struct.pack("<H", len(names)))
    for name in names:
        data = files.get(name, base.get(name))
        kind = 1 if name in same else 0
        out += bytes((len(name),)) + name.encode() + struct.pack("<BI", kind, len(data))
        out += hashlib.sha256(data).digest() + (b"" if kind else data)
    return bytes(out)


def write_tree(d, files):
    for rel, data in files.items():
        parts = rel.split("/")
        for i in range(1, len(parts)):
            try:
                os.mkdir(d + "/" + "/".join(parts[:i]))
            except OSError:
                pass
        with open(d + "/" + rel, "wb") as f:
            f.write(data)


def tree(d):
    """{relative name: bytes} of every file under d."""
    out = {}
    for rel in AppSlots(d, "a")._files(d):
        with open(d + "/" + rel, "rb") as f:
            out[rel] = f.read()
    return out


def deployed(d):
    """A board as `meterkit device deploy` leaves it: v1 in slot a (with the board's own files), a stale file in
    slot b (an older bundle's), the firmware key installed."""
    for sub in ("/flash", "/app.a", "/app.b"):
        os.mkdir(d + sub)
    write_tree(d + "/app.a", dict(V1, **{"board.json": BOARD_JSON, "calendar.json": b"{}"}))
    write_tree(d + "/app.b", {"meter/old.py": b"OLD = 0\n"})
    with open(d + "/app.slot", "w") as f:
        f.write("a")
    install_key(d + "/flash", FW_PUB)


def v2_slot(letter):
    moved = BOARD_JSON.replace(b"/app.a/", b"/app.%s/" % letter.encode())
    return dict(V1, **dict(V2, **{"board.json": moved, "calendar.json": b"{}"}))


class Board:
    """main.py's boot (appslots.boot), then the meter's AppSlots and Updater; events raised."""

    def __init__(self, d, fs=None):
        self.d = d
        self.events = []
        self.boot(fs)

    def boot(self, fs=None, slots=AppSlots):
        fs = fs or appslots.FILES
        self.letter, self.on_trial = appslots.boot(self.d, fs)
        self.slots = slots(self.d, self.letter, fs)
        self.u = Updater(self.slots, self.d + "/flash", BOARD, lambda c, v: self.events.append((c, v)))
        got = self.u.booted()
        if got is not None:
            self.events.append(got)

    def codes(self):
        return [c for c, _ in self.events]

    def running(self):
        return tree(self.d + "/app." + self.letter)


def test_good_update_unpacks_into_the_other_slot_on_trial_then_confirms():
    img = archive(V2, SAME)
    with TempDir("slots") as d:
        deployed(d)
        b = Board(d)
        eq(b.slots.format, FW_APP_FILES, "the payload format A/B slots take")
        got = deliver(b, img, manifest(img, 2, fmt=FW_APP_FILES))
        eq([r for r, _ in got], [RESULT_OK] * len(got), "every step answered 0: %r" % (got,))
        eq(tree(d + "/app.b"), v2_slot("b"), "slot b: the archive's files, the SAME one copied from slot a, the "
           "board's own files carried over (the calendar's path moved), the older bundle's file gone")
        eq((b.letter, b.u.phase), ("a", TRIAL), "set to boot; slot a still runs until the restart")
        b.boot()
        eq((b.letter, b.on_trial, b.u.trial, b.u.running_version()), ("b", True, True, "v2"), "slot b on trial")
        b.u.confirm()
        contains(events.FW_CONFIRMED, b.codes())
        eq(sorted(n for n in os.listdir(d) if n.startswith("app.")), ["app.a", "app.b", "app.slot"],
           "no trial, no staging file left")
        b.boot()
        eq((b.letter, b.on_trial, b.u.phase, b.u.running_version()), ("b", False, IDLE, "v2"), "confirmed: it stays")


def test_wrong_payload_format_and_a_slot_file_damaged_before_the_switch_are_refused():
    img = archive(V2, SAME)
    with TempDir("slots") as d:
        deployed(d)
        b = Board(d)
        r = b.u.manifest(manifest(img, 2, fmt=FW_IMAGE))
        eq(r[0], RESULT_REJECTED, "a partition image for A/B slots")
        contains("this board takes format 2", r[1])
        with TempDir("fw") as p:  # and files for the partitions of the Unix port's simulated bootloader
            install_key(p, FW_PUB)
            u = Updater(ota.SimOta(p, "ota_0"), p, BOARD, lambda c, v: None)
            r = u.manifest(manifest(img, 2, fmt=FW_APP_FILES))
            contains("this board takes format 1", r[1])
        plain = b"MKIM" + img[4:]  # signed as files, but not an archive of application files
        eq(deliver(b, plain, manifest(plain, 2, fmt=FW_APP_FILES))[-1][1],
           "rejected: cannot set it to boot: not an archive of application files (MKIH)", "plain")
        # a file of the unpacked slot damaged before the switch (a flash write gone wrong): never switched
        b.boot(slots=Damaging)
        r = deliver(b, img, manifest(img, 3, fmt=FW_APP_FILES))[-1]
        eq(r[0], RESULT_REJECTED, "damaged")
        contains("slot file meter/x.py does not hold what the archive says", r[1])
        b.boot()
        eq((b.letter, b.on_trial, b.running()), ("a", False, tree(d + "/app.a")), "slot a runs")
        eq(deliver(b, img, manifest(img, 3, fmt=FW_APP_FILES))[-1][0], RESULT_OK, "activated when it is whole")
        # a SAME file the running slot does not hold as the update expects: built against other firmware
        b.boot()
        b.u.confirm()
        eq(b.letter, "b", "v2 confirmed")
        other = archive({"MANIFEST.json": b'{"id": "v3"}'}, ("meter/x.py",), base={"meter/x.py": b"X = 9\n"})
        r = deliver(b, other, manifest(other, 4, fmt=FW_APP_FILES))[-1]
        contains("meter/x.py is not the running slot's as the update expects", r[1])


class Damaging(AppSlots):
    def _fill(self, target, items, read):
        want = AppSlots._fill(self, target, items, read)
        with open(target + "/meter/x.py", "ab") as f:
            f.write(b"#")
        return want


def test_a_failing_trial_is_rolled_back_and_its_sequence_number_is_used_up():
    img = archive(V2, SAME)
    with TempDir("slots") as d:
        deployed(d)
        b = Board(d)
        deliver(b, img, manifest(img, 5, fmt=FW_APP_FILES))
        b.boot()
        eq((b.letter, b.on_trial), ("b", True), "on trial")
        eq(appslots.abort(d), True, "an exception out of the trial (main.py): rolled back before the reset")
        eq(appslots.abort(d), False, "once")
        b.boot()
        eq((b.letter, b.on_trial, b.u.phase, b.u.running_version()), ("a", False, IDLE, None), "slot a again")
        contains(events.FW_ROLLED_BACK, b.codes())
        eq(b.u.manifest(manifest(img, 5, fmt=FW_APP_FILES))[0], RESULT_REJECTED, "its sequence number is burnt")
        # a trial boot that ends without confirmation (a hang, the watchdog, a reset): the next boot rolls back,
        # a power cut at any step of that rollback notwithstanding
        cuts = []
        for cut in range(7):
            eq(deliver(b, img, manifest(img, 6 + cut, fmt=FW_APP_FILES))[-1][0], RESULT_OK, "activated")
            b.boot()
            eq((b.letter, b.on_trial), ("b", True), "on trial")
            try:
                b.boot(CutFiles(cut))
                cuts.append(False)
            except PowerCut:
                cuts.append(True)
                b.boot()
            eq((b.letter, b.on_trial, b.u.phase), ("a", False, IDLE), "cut %d: rolled back at boot" % cut)
        eq(cuts, [True] * 6 + [False], "a cut at each of the rollback's 6 steps")
        eq(b.codes().count(events.FW_ROLLED_BACK), 8, "each reported")


def test_power_cut_at_every_step_boots_a_complete_slot_and_the_update_resumes():
    img = archive(V2, SAME)
    man = manifest(img, 7, fmt=FW_APP_FILES)
    again = manifest(img, 8, fmt=FW_APP_FILES)  # after a cut on trial: a reset on trial is rolled back
    old = None
    rolled = []
    cut = 0
    while True:
        with TempDir("slotcut") as d:
            deployed(d)
            old = old or tree(d + "/app.a")
            fs = CutFiles(cut)
            b = Board(d, fs)
            try:
                deliver(b, img, man)
                b.boot(fs)
                b.u.confirm()
                done = True
            except PowerCut:
                done = False
            for _ in range(3):  # boot again after the cut; finish what is left; always a complete slot
                b.boot()
                eq(b.running() in (old, v2_slot("b")), True, "cut %d: a complete slot runs" % cut)
                if b.u.trial:
                    b.u.confirm()
                elif b.u.running_version() != "v2":
                    back = events.FW_ROLLED_BACK in b.codes()
                    if back:
                        rolled.append(cut)
                    eq(deliver(b, img, again if back else man)[-1][0], RESULT_OK, "cut %d: the delivery resumes" % cut)
            eq((b.letter, b.on_trial, b.u.running_version()), ("b", False, "v2"), "cut %d: updated" % cut)
            eq(b.running(), v2_slot("b"), "cut %d: slot b whole" % cut)
        if done:
            break
        cut += 1
    eq(cut >= 20, True, "cuts in the staging, the unpack, the switch, the trial's boot and its confirmation (%d)"
       % cut)
    eq(len(rolled), 1, "only the cut between the trial's start (app.trial 'pending') and its confirmation rolls "
       "back: %r" % (rolled,))
