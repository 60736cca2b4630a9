"""`meterkit device flash`: MicroPython onto an ESP32-family board through esptool.

    flash(port, firmware)   detect the chip (esptool's detect_chip: the ROM bootloader says what it is), check
                            that the firmware image was built for that chip (the chip id in its extended
                            header), erase the flash, write the image at the chip's offset

The offset is where the chip's ROM looks for the second-stage bootloader, and a MicroPython download
(ESP32_GENERIC-*.bin, ESP32_GENERIC_S3-*.bin ...) begins with that bootloader: 0x1000 on the ESP32 and
ESP32-S2, 0x0 on the ESP32-S3 and the RISC-V chips (C3, C6). It is taken from esptool's own chip classes
(BOOTLOADER_FLASH_OFFSET), the numbers micropython.org gives with each download.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meterkit.device.session import DeviceError, check_port

CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6")
IMAGE_MAGIC = 0xE9
BAUD = 460800


def _rom(chip: str) -> type:
    from esptool.targets import CHIP_DEFS

    if chip not in CHIPS:
        raise DeviceError(f"unknown chip {chip!r}: one of {', '.join(CHIPS)}")
    return CHIP_DEFS[chip]


def flash_offset(chip: str) -> int:
    """Where a MicroPython image goes on this chip (its ROM's bootloader offset)."""
    return _rom(chip).BOOTLOADER_FLASH_OFFSET


def chip_key(chip_name: str) -> str:
    """esptool's CHIP_NAME ('ESP32-S3') -> our key ('esp32s3')."""
    return chip_name.lower().replace("-", "")


def image_chip(firmware: str | Path) -> str:
    """The chip a firmware image was built for, from its header (magic 0xE9; chip id at byte 12)."""
    try:
        head = Path(firmware).read_bytes()[:16]
    except OSError as e:
        raise DeviceError(f"cannot read the firmware {firmware}: {e}") from None
    if len(head) < 16 or head[0] != IMAGE_MAGIC:
        raise DeviceError(f"{firmware} is not an ESP32 firmware image (a MicroPython .bin starts with 0xE9); "
                          "download one from micropython.org/download for your board")
    chip_id = head[12] | head[13] << 8
    for chip in CHIPS:
        if _rom(chip).IMAGE_CHIP_ID == chip_id:
            return chip
    raise DeviceError(f"{firmware} is built for chip id {chip_id}, not one of {', '.join(CHIPS)}")


def esptool_commands(chip: str, port: str, firmware: str | Path, baud: int = BAUD,
                     erase: bool = True) -> list[list[str]]:
    """The esptool command lines (arguments after `esptool`) that put `firmware` on a `chip` board."""
    base = ["--chip", chip, "--port", port, "--baud", str(baud)]
    cmds = [base + ["erase-flash"]] if erase else []
    return cmds + [base + ["write-flash", "-z", hex(flash_offset(chip)), str(firmware)]]


def detect(port: str, attempts: int = 3) -> str:
    """The chip on `port` (our key), asked from its ROM bootloader through esptool."""
    from esptool.cmds import detect_chip
    from esptool.util import FatalError

    check_port(port)
    try:
        esp = detect_chip(port, connect_attempts=attempts)
    except FatalError as e:
        text = str(e)
        if "busy" in text or "Could not open" in text:
            raise DeviceError(f"cannot open {port}: it is busy or gone ({text.splitlines()[0]})") from None
        raise DeviceError(f"no ESP32 answers on {port} ({text.strip().splitlines()[0]}): hold the BOOT button, "
                          "press EN, release BOOT, and try again; or check the cable and the port") from None
    try:
        return chip_key(esp.CHIP_NAME)
    finally:
        esp._port.close()


def flash(port: str, firmware: str | Path, chip: str | None = None, baud: int = BAUD,
          erase: bool = True, run: bool = True) -> list[list[str]]:
    """Flash `firmware` onto the board on `port`. Returns the esptool commands (run unless run=False)."""
    built_for = image_chip(firmware)
    found = chip or detect(port)
    if found != built_for:
        raise DeviceError(f"wrong chip: the board on {port} is an {found.upper()}, and {firmware} is built for an "
                          f"{built_for.upper()}: download the MicroPython image for your board")
    cmds = esptool_commands(found, port, firmware, baud, erase)
    for args in cmds if run else []:
        proc = subprocess.run([sys.executable, "-m", "esptool", *args], check=False)
        if proc.returncode != 0:
            raise DeviceError(f"esptool {' '.join(args)} failed (exit {proc.returncode}); the board may need a "
                              "press of EN before MicroPython starts")
    return cmds
