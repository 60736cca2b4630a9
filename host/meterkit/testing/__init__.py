"""Test rigs shared by the tests and the bench: the pytest plugin that runs firmware tests inside MicroPython
(mpytest), simulated meters with a concentrator on loopback (rig), and the tests' one way to SQL in the head-end
database, for what the store's API must not offer (sqlfile: an older schema, a tampered row, a NULL column).

May import: everything below the CLI. Production code other than bench/ and sim/ does not import it.
"""
