# The Unix port's boot: the simulated bootloader (sim/ota.py) chooses the app partition and mounts its image,
# then the runner starts the meter (sim/run.py, same arguments). As on a board, an image on trial that fails
# (an exception out of the meter) resets the board, exit status 3: the bootloader rolls it back at the next boot.
#   micropython -m sim.boot --flash DIR [sim/run.py's arguments]
# Until the first update sets a partition to boot (otadata.json) the factory image runs and sim.ota is not loaded.
import os
import sys


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def main(argv):
    flash = argv[argv.index("--flash") + 1] if "--flash" in argv[:-1] else None
    ota = None
    if flash is not None and _exists(flash.rstrip("/") + "/otadata.json"):
        from sim import ota

        ota.boot(flash)
    from sim import run

    try:
        run.main(argv)
    except Exception as e:  # noqa: BLE001 - on trial: the board resets and the bootloader rolls it back
        if ota is None or not ota.trial:
            raise
        print("@@RESET crash: %r" % (e,))
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1:])
