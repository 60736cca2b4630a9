# The test board's runner: what firmware/main.py starts when the board profile says mcu "unix-sim", on the
# Unix port behind a pty (meterkit.testing.board). The simulator is that board's hardware, the part machine
# plays on an ESP32, and sits in its ROM (/rom/sim): a deployed bundle never holds it.
#
# The profile's 'sim' section: scenario, seed, start_unix_s, osc_ppm, shunt_error_ppm, offset_lsb,
# controlled_share (see sim.hardware), speed (virtual time at most this many times real time, default 1),
# reading_s (default 60).
# Its link: "tcp" (or "wifi-tcp": this board is always on the network) to host:port, over TLS when the link has
# a "tls" section (meter.tls, its files in the flash directory, as `meterkit device provision --tls-ca` puts
# them), or "uart": the console, the REPL's own port (meter.console), as an ESP32 whose link shares its USB
# serial port.
from sim import run


def link_spec(link):
    if link is None:
        return None
    if link["kind"] == "uart":
        return "console"
    return "%s:%s:%d" % ("tls" if link.get("tls") else "tcp", link["host"], link["port"])


def tls_args(link):
    """sim.run's options for a link.tls section (its paths stay relative to the flash directory)."""
    tls = (link or {}).get("tls")
    if not tls:
        return []
    out = ["--tls-ca", tls["ca"], "--tls-name", tls["server_name"]]
    if tls.get("cert"):
        out += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    return out


def main(board):
    sim = board["sim"]
    argv = ["--hours", "1000000", "--speed", str(sim.get("speed", 1)), "--reading-s", str(sim.get("reading_s", 60))]
    spec = link_spec(board.get("link"))
    if spec is not None:
        argv += ["--link", spec] + tls_args(board.get("link"))
    run.main(argv, board=board)
