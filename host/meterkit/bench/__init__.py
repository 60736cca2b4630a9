"""`meterkit bench`: performance measured side by side in one run (ratios, not wall-clock limits): the
metrology kernel vs its pure twin, signing on the Unix port, frame sizes, the register model's cost, host
verify vs bare OpenSSL, concentrator ingest vs bare verify, the meter's heap. docs/performance.md has the figures.

May import: everything below the CLI. Not meterkit.cli.
"""
