"""meterkit host toolkit: talks to meterkit firmware (on an ESP32 or under the MicroPython Unix port)."""

__version__ = "0.1.0"
