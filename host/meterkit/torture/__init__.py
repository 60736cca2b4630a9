"""Our own torture suite (issue 11): the real firmware and the real concentrator under power cuts, link drops,
concentrator kills, wrong clocks and floods, each run counted the same way (tally.py).

A scenario is a module with NAME and ``run(out: Path, long: bool, seed: int) -> tally.Result``; `meterkit torture`
and tests/torture/ run them, the short form in CI and the long form on demand. scale_demo is the failover
scenario's friendly face: `meterkit demo --scale`.
"""
