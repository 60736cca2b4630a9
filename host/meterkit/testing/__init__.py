"""Test rigs shared by the tests and the bench: the pytest plugin that runs firmware tests inside MicroPython
(mpytest), and simulated meters with a concentrator on loopback (rig).

May import: everything below the CLI. Production code other than bench/ and sim/ does not import it.
"""
