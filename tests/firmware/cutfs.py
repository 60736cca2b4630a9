# meter.appslots' file operations with a power cut at the n-th step that changes the flash, for the tests of A/B
# application updates. Harsher than LittleFS, which keeps a file's last committed version: a write is torn
# half-way (and stays so), a file opened for writing is left empty; a rename, remove or mkdir is done, then the
# power goes. Reads are never cut.
from meter.appslots import Files


class PowerCut(Exception):
    pass


class CutFiles(Files):
    def __init__(self, cut_after=None):
        self.left = cut_after  # steps that complete before the cut (None: never)
        self.steps = 0

    def cut(self):
        """True when the power goes at this step."""
        self.steps += 1
        if self.left is None:
            return False
        if self.left <= 0:
            return True
        self.left -= 1
        return False

    def open(self, path, mode):
        f = Files.open(self, path, mode)
        if "r" in mode and "+" not in mode:
            return f
        if "w" in mode and self.cut():
            f.close()
            raise PowerCut("opening %s" % path)
        return _CutFile(self, f, path)

    def rename(self, a, b):
        Files.rename(self, a, b)
        self._after("renaming %s" % b)

    def remove(self, path):
        Files.remove(self, path)
        self._after("removing %s" % path)

    def mkdir(self, path):
        Files.mkdir(self, path)
        self._after("making %s" % path)

    def _after(self, what):
        if self.cut():
            raise PowerCut("after " + what)


class _CutFile:
    def __init__(self, fs, f, path):
        self.fs = fs
        self.f = f
        self.path = path

    def write(self, data):
        if self.fs.cut():
            self.f.write(data[:len(data) // 2])
            self.f.close()
            raise PowerCut("writing %s" % self.path)
        return self.f.write(data)

    def seek(self, pos):
        return self.f.seek(pos)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False
