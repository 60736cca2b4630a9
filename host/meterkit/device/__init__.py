"""The MicroPython toolchain on this machine: where the firmware, the board profiles, the `micropython`
interpreter and `mpy-cross` are, and the compiled firmware build; the 32-bit test interpreter built from
MicroPython's core (`mp32`: the build driver; `port32/`: its C port, docs/mp32.md). Building, flashing,
deploying and provisioning real boards grow here.

May import: the standard library. Nothing else of meterkit.
"""
