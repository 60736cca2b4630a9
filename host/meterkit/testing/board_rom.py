# Power-up of the test board (meterkit.testing.board): runs INSIDE the MicroPython Unix port, started as
#   micropython -i board_rom.py IMAGE BLOCKS ROM_DIR RUN_MAIN
# It does what an ESP32's frozen _boot.py and its main loop do at power-up: mount the flash (LittleFS v2 on a
# file-backed block device: IMAGE, BLOCKS blocks of 4 KiB, formatted on first use) at "/", put the board's ROM
# (ROM_DIR: the simulated hardware, which plays the part of machine/esp32 on this board) at "/rom", then run
# /boot.py and, unless RUN_MAIN is "0" (a soft reset in the raw REPL), /main.py. -i leaves it at the REPL.
# Every block write is a write(2) of the image file, so a killed process leaves what a power cut would.
import os
import sys
import time

import vfs

BLOCK = 4096


class FileFlash:
    """A flash chip of `blocks` 4 KiB blocks kept in a host file (the block-device protocol of vfs.VfsLfs2)."""

    def __init__(self, f, blocks):
        self.f = f
        self.blocks = blocks

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:  # the simple interface: erase, then program the whole block
            self.ioctl(6, block)
            off = 0
        self.f.seek(block * BLOCK + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase
            self.f.seek(arg * BLOCK)
            self.f.write(b"\xff" * BLOCK)
        return 0


def _power_up(image, blocks, rom):
    flash = FileFlash(open(image, "r+b"), blocks)  # opened while the host file system is still mounted
    vfs.umount("/")
    try:
        vfs.mount(vfs.VfsLfs2(flash), "/")
    except OSError:  # a blank (or unreadable) flash: format it, as the ESP32's _boot.py does
        vfs.VfsLfs2.mkfs(flash)
        vfs.mount(vfs.VfsLfs2(flash), "/")
    vfs.mount(vfs.VfsPosix(rom), "/rom", readonly=True)
    os.chdir("/")
    # a board's own path ('', '.frozen', '/lib'): an ESP32 build freezes ssl, asyncio, mip... as this port does
    sys.path[:] = ["", ".frozen", "/rom", "/lib"]


def _run(name):
    """Run a script of the flash's root as a board does (pyexec_file_if_exists): errors printed, not fatal."""
    try:
        os.stat(name)
    except OSError:
        return
    try:
        with open(name) as f:
            code = compile(f.read(), name, "exec")
        exec(code, {"__name__": "__main__"})
    except SystemExit:  # a soft reset, as on a board (-i would go on to the REPL): the shim restarts us
        sys.stdout.write("\x1b[board-reset]")
        while True:
            time.sleep_ms(100)
    except BaseException as e:  # noqa: B036 - KeyboardInterrupt too: the board goes on to its REPL
        sys.print_exception(e)


sys.stdout.write("\x1b[board-up]")  # to meterkit.testing.board (not passed on): MicroPython handles Ctrl-C now
_power_up(sys.argv[1], int(sys.argv[2]), sys.argv[3])
_run("boot.py")
if sys.argv[4] != "0":
    _run("main.py")
del _power_up, _run  # the REPL starts with a clean namespace, save the flash (its methods need BLOCK)
