"""Where the ingest is, for the torture suite's concentrator kills (issue 11; docs/concentrator.md, "Concentrator
kills"). Off unless the environment variable METERKIT_FAULTS is set; it is read once, at import.

    METERKIT_FAULTS=PATH                     keep the phase page PATH current
    METERKIT_FAULTS=PATH,kill=POINT:N        ... and SIGKILL this process at the N-th batch with frames, at POINT:
                                             'before-commit' (every row written, COMMIT not run) or
                                             'after-commit' (COMMIT returned, no acknowledgement sent)

The phase page is a small shared file mapping (mmap) that survives the process: whoever killed it reads where
it died. Byte 0 is the phase: IDLE, IN_COMMIT (a batch's transaction is open: from before its first write until
its COMMIT returned), ACKING (committed, its acknowledgements not all handed to the connections). Bytes 4..8
hold the number of batches with frames so far (little-endian), 8..12 the length of what follows: the open batch's
fresh frames as JSON {device hex: [seq, ...]}. The JSON is written before the phase byte that announces it.
"""

from __future__ import annotations

import json
import mmap
import os
import signal

IDLE, IN_COMMIT, ACKING = 0, 1, 2
PHASES = {IDLE: "idle", IN_COMMIT: "in-commit", ACKING: "after-commit-before-ack"}
POINTS = ("before-commit", "after-commit")
PAGE_BYTES = 1 << 16
_HEAD = 12


class _Page:
    def __init__(self, path: str, kill: tuple[str, int] | None):
        with open(path, "w+b") as f:
            f.truncate(PAGE_BYTES)
            self.mm = mmap.mmap(f.fileno(), PAGE_BYTES)
        self.kill = kill
        self.batches = 0

    def enter(self, seqs: dict[bytes, list[int]]) -> None:
        if seqs:
            self.batches += 1
        body = json.dumps({dev.hex(): s[:500] for dev, s in seqs.items()}).encode()[:PAGE_BYTES - _HEAD]
        mm = self.mm
        mm[_HEAD:_HEAD + len(body)] = body
        mm[4:12] = self.batches.to_bytes(4, "little") + len(body).to_bytes(4, "little")
        mm[0] = IN_COMMIT

    def point(self, name: str, seqs: dict) -> None:
        if self.kill == (name, self.batches) and seqs:
            os.kill(os.getpid(), signal.SIGKILL)


def _parse(spec: str) -> _Page | None:
    path, *opts = spec.split(",")
    kill = None
    for opt in opts:
        key, _, value = opt.partition("=")
        point, _, n = value.partition(":")
        if key != "kill" or point not in POINTS or not n.isdigit():
            raise ValueError(f"METERKIT_FAULTS: {opt!r} is not kill=before-commit:N or kill=after-commit:N")
        kill = (point, int(n))
    return _Page(path, kill)


_page = _parse(os.environ["METERKIT_FAULTS"]) if os.environ.get("METERKIT_FAULTS") else None


def entered(seqs: dict[bytes, list[int]]) -> None:
    """A batch's transaction opens; seqs: its fresh frames by device."""
    if _page is not None:
        _page.enter(seqs)


def before_commit(seqs: dict[bytes, list[int]]) -> None:
    """Every row of the batch is written; COMMIT comes next."""
    if _page is not None:
        _page.point("before-commit", seqs)


def committed(seqs: dict[bytes, list[int]]) -> None:
    """The batch's COMMIT returned; its acknowledgements come next."""
    if _page is not None:
        _page.mm[0] = ACKING
        _page.point("after-commit", seqs)


def idle() -> None:
    """The batch is done (acknowledged, or failed)."""
    if _page is not None:
        _page.mm[0] = IDLE


def read_page(path: str | os.PathLike) -> tuple[str, int, dict[bytes, list[int]]]:
    """(phase name, batches with frames, the open batch's frames: none when idle) as a dead process left them."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        body = f.read(int.from_bytes(head[8:12], "little"))
    frames = {bytes.fromhex(k): v for k, v in json.loads(body or b"{}").items()} if head[0] != IDLE else {}
    return PHASES[head[0]], int.from_bytes(head[4:8], "little"), frames


def environment(page: str | os.PathLike, kill: tuple[str, int] | None = None) -> str:
    """The METERKIT_FAULTS value for a concentrator process."""
    return f"{page}" + (f",kill={kill[0]}:{kill[1]}" if kill else "")
