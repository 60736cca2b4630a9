"""Signed firmware updates on the host (docs/firmware-updates.md): the update file (`image`: an image, its
manifest signed with the firmware key) and the fleet rollout in waves (`rollout`: chunks through the command
queue, a canary first, halted when a wave's meters do not come back). `meterkit firmware sign|push|status`.

May import: wire, store, headend, timefmt (and the firmware's pure modules, meter.*).
"""
