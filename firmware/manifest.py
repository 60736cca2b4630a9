# Freeze manifest: the `meter` package compiled into a MicroPython firmware image, for boards without PSRAM
# (docs/hardware.md: the meter's code then runs from flash and leaves the heap to its data). Never `sim`: the
# simulator is the Unix port's hardware, not a board's. main.py, the board profile and the link settings stay
# on the board's file system (meterkit device deploy / provision). Build, in a MicroPython checkout:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/meterkit/firmware/manifest.py
include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules (_boot.py mounts the flash)
package("meter")  # firmware/meter, beside this file
