# Board entry point: pick the firmware slot, load the board profile with the link settings provisioning
# installed, start the meter. Kept thin on purpose.
#
# Deployed firmware lives in two slots, /app.a and /app.b, each a whole bundle (meter/*.mpy, board.json,
# MANIFEST.json with every file's SHA-256). /app.slot names the slot to run. `meterkit device deploy` fills the
# other slot, checks every hash on the device, and only then replaces /app.slot (a new file renamed over it:
# a LittleFS rename is atomic). Unplugged at any instant, the board runs the old firmware or the new one,
# never a mix. Without /app.slot (meter/ copied by hand, or frozen into the firmware image) the root is used.
# /link.json (provisioning: serial, or Wi-Fi and the concentrator's address) replaces the profile's 'link'.
import json
import sys


def _slot():
    try:
        with open("/app.slot") as f:
            name = f.read().strip()
    except OSError:
        return ""
    return "/app." + name if name in ("a", "b") else ""


def _board(root):
    from meter.board import load_board, validate_board

    board = load_board(root + "/board.json")
    try:
        with open("/link.json") as f:
            board["link"] = json.load(f)
    except OSError:
        return board
    return validate_board(board)


slot = _slot()
if slot:
    sys.path.insert(0, slot)  # before the frozen modules: a deployed meter/ wins; a slot without one uses them
    try:
        with open(slot + "/MANIFEST.json") as f:
            bundle = json.load(f).get("id", "?")
    except (OSError, ValueError):
        bundle = "?"
    print("meterkit: firmware %s from %s" % (bundle, slot))
board = _board(slot)
if board["mcu"] == "unix-sim":
    from sim.board import main  # the test board (meterkit.testing.board): its ROM holds the simulator
else:
    from meter.app import main
main(board)
