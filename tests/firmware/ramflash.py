# A flash chip in RAM for MicroPython's VfsLfs2 (LittleFS, the ESP32's file system), shared by the firmware
# tests of everything that writes flash: it counts erases and programmed bytes, and can freeze a copy of its
# image in the middle of the n-th program/erase, as a power failure would leave it.

try:
    import vfs
except ImportError:  # older ports keep the file systems in os
    import os as vfs

BLOCK = 4096
# LittleFS v2, or None: it lives in extmod/ and lib/littlefs/, outside MicroPython's core, so the 32-bit
# interpreter of the tests (built from the core alone, docs/mp32.md) has none. Its tests say so with:
VfsLfs2 = getattr(vfs, "VfsLfs2", None)
NO_LITTLEFS = "needs vfs.VfsLfs2 (LittleFS is extmod + lib/littlefs, not MicroPython's core)"


class Flash:
    """VfsLfs2 block device that counts erases and programmed bytes. It can freeze a copy of its image at the
    n-th program/erase with that operation `quarters`/4 done: the power failed in the middle of it."""

    def __init__(self, blocks=0, image=None, cut_at=None, quarters=0):
        if image is not None:
            self.data = bytearray(image)
        else:  # erased flash, filled in place: one block-sized buffer, not a second image-sized one
            self.data = bytearray(BLOCK * blocks)
            ff = b"\xff" * BLOCK
            for b in range(blocks):
                self.data[b * BLOCK:(b + 1) * BLOCK] = ff
        self.blocks = len(self.data) // BLOCK
        self.erases = [0] * self.blocks
        self.programmed = 0
        self.ops = 0
        self.cut_at = cut_at
        self.quarters = quarters
        self.frozen = None

    def _op(self, addr, new):
        if self.ops == self.cut_at:
            self.frozen = bytearray(self.data)
            done = len(new) * self.quarters // 4
            self.frozen[addr:addr + done] = new[:done]
        self.ops += 1

    def readblocks(self, block, buf, off=0):
        a = block * BLOCK + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=None):
        if off is None:
            self.ioctl(6, block)
            off = 0
        a = block * BLOCK + off
        self._op(a, buf)
        self.data[a:a + len(buf)] = buf
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            a = arg * BLOCK
            self._op(a, b"\xff" * BLOCK)
            self.erases[arg] += 1
            self.data[a:a + BLOCK] = b"\xff" * BLOCK
        return 0
