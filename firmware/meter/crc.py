# CRC-32 (IEEE 802.3, as zlib and binascii compute it; check value 0xCBF43926), shared by the checkpoint
# slots (meter/store.py) and the wire frames (meter/frame.py). binascii.crc32 exists on MicroPython and CPython.
import binascii


def crc32(data):
    return binascii.crc32(data) & 0xFFFFFFFF
