"""The MicroPython toolchain on this machine: where the firmware, the board profiles, the `micropython`
interpreter and `mpy-cross` are, and the compiled firmware build. Building, flashing, deploying and
provisioning real boards grow here.

May import: the standard library. Nothing else of meterkit.
"""
