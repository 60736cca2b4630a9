"""Simulation on the host: the real firmware run under the MicroPython Unix port against simulated hardware
(runner), a fleet of such meters over ptys and TCP against a real concentrator (fleet), `meterkit demo`, and
`meterkit billcheck` (a long run billed from its frames and, independently, from the simulator's ground truth).

May import: everything below the CLI (wire, store, headend, billing, dr, device, firmware, testing). Not
meterkit.cli.
"""
