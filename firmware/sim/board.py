# The test board's runner: what firmware/main.py starts when the board profile says mcu "unix-sim", on the
# Unix port behind a pty (meterkit.testing.board). The simulator is that board's hardware, the part machine
# plays on an ESP32, and sits in its ROM (/rom/sim): a deployed bundle never holds it.
#
# The profile's 'sim' section: scenario, seed, start_unix_s, osc_ppm, shunt_error_ppm, offset_lsb,
# controlled_share (see sim.hardware), speed (virtual time at most this many times real time, default 1),
# reading_s (default 60).
# Its link: "tcp" (or "wifi-tcp": this board is always on the network) to host:port, or "uart": the console,
# the REPL's own port (meter.console), as an ESP32 whose link shares its USB serial port.
from sim import run


def link_spec(link):
    if link is None:
        return None
    if link["kind"] == "uart":
        return "console"
    return "tcp:%s:%d" % (link["host"], link["port"])


def main(board):
    sim = board["sim"]
    argv = ["--hours", "1000000", "--speed", str(sim.get("speed", 1)), "--reading-s", str(sim.get("reading_s", 60))]
    spec = link_spec(board.get("link"))
    if spec is not None:
        argv += ["--link", spec]
    run.main(argv, board=board)
