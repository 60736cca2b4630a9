"""The head-end: the concentrator in parts (docs/concentrator.md, "The parts"), operator commands, fleet status.

May import: meter (messages, cose, frame, events, tou), meterkit.wire, meterkit.store, meterkit.timefmt, pyserial,
the standard library. Nothing of the CLI.
"""
