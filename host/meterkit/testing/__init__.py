"""Test support: the pytest plugin that runs firmware tests inside the MicroPython Unix port."""
