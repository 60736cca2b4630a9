"""Bills from a meter's signed data: price files, local time from the meter's own TOU calendar, billing
determinants from billing snapshots (or the load profile), money in exact decimals, CSV and plots.

May import: meter (tou, civil: the calendar code the meter runs), meterkit.wire, the store's interface,
meterkit.timefmt, the standard library, matplotlib (plots only). Not the head-end, the CLI or SQL.
"""
