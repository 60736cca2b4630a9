# Board entry point: pick the firmware slot, load the board profile with the link settings provisioning
# installed, start the meter. Kept thin on purpose.
#
# Deployed firmware lives in two slots, /app.a and /app.b, each a whole bundle (meter/*.mpy, board.json,
# MANIFEST.json with every file's SHA-256). /app.slot names the slot to run. `meterkit device deploy` fills the
# other slot, checks every hash on the device, and only then replaces /app.slot (a new file renamed over it:
# a LittleFS rename is atomic). Unplugged at any instant, the board runs the old firmware or the new one,
# never a mix. Without /app.slot (meter/ copied by hand, or frozen into the firmware image) the root is used.
# A signed firmware update fills the other slot too and switches it on trial (meter/appslots.py): its trial's
# books are kept here at every boot by meter.appslots taken from the slot the update came from (a slot on trial
# never judges itself), and an exception out of a slot on trial rolls it back and resets the board.
# /link.json (provisioning: serial, or Wi-Fi and the concentrator's address) replaces the profile's 'link'.
import json
import sys

SLOTS = ("a", "b")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _forget_meter():
    for m in [m for m in sys.modules if m == "meter" or m.startswith("meter.")]:
        del sys.modules[m]


def _slot():
    """(the slot's directory or "" for the root, meter.appslots when the slot runs on trial, else None, the
    directory of the slot that judges the trial)."""
    name = _read("/app.slot")
    if name not in SLOTS:
        return "", None, ""
    trial = _read("/app.trial")[:1]
    judge = SLOTS[1 - SLOTS.index(trial)] if trial in SLOTS else name
    sys.path.insert(0, "/app." + judge)
    try:
        from meter import appslots
    except ImportError:  # a bundle from before A/B updates: no trial to keep
        appslots = None
    name, on_trial = appslots.boot("/") if appslots else (name, False)
    _forget_meter()  # the application's own modules come from its slot
    sys.path[0] = "/app." + name  # before the frozen modules: a deployed meter/ wins; a slot without one uses them
    return sys.path[0], appslots if on_trial else None, "/app." + judge


def _board(root):
    from meter.board import load_board, validate_board

    board = load_board(root + "/board.json")
    try:
        with open("/link.json") as f:
            board["link"] = json.load(f)
    except OSError:
        return board
    return validate_board(board)


def _reset(judge):
    """The board restarts, by meter.hal from the slot that judged the trial (the failed one may be broken)."""
    _forget_meter()
    sys.path[0] = judge
    from meter.hal import reset_board

    reset_board()


slot, trial, judge = _slot()
if slot:
    try:
        with open(slot + "/MANIFEST.json") as f:
            bundle = json.load(f).get("id", "?")
    except (OSError, ValueError):
        bundle = "?"
    print("meterkit: firmware %s from %s%s" % (bundle, slot, " on trial" if trial else ""))
try:
    board = _board(slot)
    if board["mcu"] == "unix-sim":
        from sim.board import main  # the test board (meterkit.testing.board): its ROM holds the simulator
    else:
        from meter.app import main
    main(board)
except Exception as e:  # noqa: BLE001 - the firmware on trial failed: roll it back (else as ever: the REPL)
    if trial is None or not trial.abort("/"):
        raise
    sys.print_exception(e)
    print("meterkit: the firmware on trial failed: back to the previous slot")
    _reset(judge)
