"""Demand response, the utility's side (issue 12): groups of meters, events called on a group, who took part,
and the load reduction each event measured against a baseline (docs/demand-response.md).

    programme      groups in the registry, calling an event: recorded and queued for every meter of its group
    participation  per meter of an event: accepted, refused (why), opted out (when), not reached, pending
    baseline       the method, pure: similar days, exclusions, the baseline and the reduction of one meter
    report         `meterkit dr report`: the store's rows into the method, per meter and for the group

May import: meterkit.wire, meterkit.store, meterkit.headend, meterkit.timefmt (and meter.messages).
"""
