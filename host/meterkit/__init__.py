"""meterkit host toolkit: the head-end for meterkit firmware (on an ESP32 or under the MicroPython Unix port).

    wire/      the protocol on the host side: verify, decode into typed records, sign, refuse replays
    store/     the head-end database behind small protocols (SQLite today)
    headend/   the concentrator in parts; operator commands; fleet status
    billing/   prices, local time, determinants, bills, plots
    mqtt/      northbound MQTT: Home Assistant's discovery, verified states, opt-in commands
    sim/       the firmware under the Unix port: runner, fleet, demo, billcheck
    bench/     `meterkit bench`;   device/: the MicroPython toolchain;   testing/: rigs for the tests
    cli/       argparse and handlers only, one module per command family
    timefmt    the one UTC formatter and parser

Dependencies point down: cli -> sim, bench -> headend, billing -> store -> wire -> meter (the firmware's pure
modules: the wire schema, CBOR, COSE). Nothing imports cli.
"""

__version__ = "0.1.0"
