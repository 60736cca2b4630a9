"""The head-end's database. Today one module (db.py: the Store interface and SQLiteStore); being reshaped into
small protocols per aggregate with a SQLite implementation beneath (issue 9) and a PostgreSQL one next.

May import: meterkit.wire, the standard library (sqlite3 only inside this package). Nothing else of meterkit.
"""
