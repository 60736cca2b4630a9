# Frame sequence numbers that never repeat for a device, across reboots and power loss, without a flash
# write per frame.
#
# Numbers are reserved in blocks: before the first number of a block is used, the block's end is written to
# flash (meter/store.py: two CRC-checked slots, so a power cut mid-write keeps the previous reservation).
# After an unplanned restart numbering resumes at the end of the last reservation: the unused rest of the block
# is skipped, a number is never reused. An orderly restart (a reboot command, a firmware activation) first
# shrinks the reservation to what was used (close()): the next boot goes on without a gap, which the head-end
# would otherwise have to settle before it acknowledges past it. Cost: one flash write per BLOCK frames.
import struct

BLOCK = 1024


class FrameSeq:
    def __init__(self, store, block=BLOCK):
        self.store = store
        self.block = block
        loaded = store.load()
        reserved = 0
        if loaded is not None:
            payload = loaded[1]
            if len(payload) == 8:
                reserved = struct.unpack("<Q", payload)[0]
        self.next = reserved  # everything below the stored reservation may have been used already
        self.limit = reserved

    def _reserve(self):
        limit = self.next + self.block
        self.store.save(struct.pack("<Q", limit))  # durable before any number in the block is handed out
        self.limit = limit

    def take(self):
        if self.next >= self.limit:
            self._reserve()
        n = self.next
        self.next = n + 1
        return n

    def close(self):
        """Before an orderly restart: the reservation ends at the next number, so the next boot resumes there.
        A cut during the write keeps the previous reservation (a gap, never a reuse)."""
        if self.limit > self.next:
            self.store.save(struct.pack("<Q", self.next))
            self.limit = self.next
