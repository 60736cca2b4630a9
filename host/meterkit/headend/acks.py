"""The cumulative acknowledgement: which of a meter's sequence numbers are stored, and what the ack may say.

For each meter the head-end keeps the watermark W (ack key 12): the largest N such that every sequence number
from the start of the block (meter.seqno.BLOCK) of the first one ever stored for that meter up to N is stored,
or *settled*: a meter's first frames lost on the way (a serial port opened after the meter's boot) are a gap
to back-fill, not numbers the ack passes unseen. A number is settled when the
meter answered a back-fill for it without sending it: result 0 ("everything resent": numbers a restart skipped
were never made) or -1 ("gone": its outbox dropped it). W never passes a hole that is not settled: with 10, 11,
13 stored, the ack says 11.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from meter.frame import encode_frame
from meter.seqno import BLOCK
from meterkit import wire as P


def ranges_add(r: list[list[int]], lo: int, hi: int) -> None:
    """Insert [lo, hi] into a sorted list of disjoint, non-adjacent [lo, hi] ranges, merging neighbours."""
    i = bisect.bisect_left(r, [lo])
    if i > 0 and r[i - 1][1] >= lo - 1:
        i -= 1
        lo = min(lo, r[i][0])
        hi = max(hi, r[i][1])
        del r[i]
    while i < len(r) and r[i][0] <= hi + 1:
        hi = max(hi, r[i][1])
        del r[i]
    r.insert(i, [lo, hi])


def ranges_covered(r: list[list[int]], lo: int, hi: int) -> int:
    """How many numbers of [lo, hi] the ranges cover."""
    n = 0
    for a, b in r:
        if b < lo:
            continue
        if a > hi:
            break
        n += min(b, hi) - max(a, lo) + 1
    return n


class Watermark:
    """One meter's stored (or settled) sequence numbers: W, and the ranges above it."""

    __slots__ = ("ack", "first_seq", "ranges")

    def __init__(self, ack: int | None = None, first_seq: int | None = None):
        self.ack = ack  # W; None: nothing stored yet
        self.first_seq = first_seq  # the first sequence number ever stored
        self.ranges: list[list[int]] = []  # stored or settled numbers above W, never touching it

    def accept(self, seqs: list[int]) -> None:
        """Sequence numbers just stored (ascending per connection, not necessarily overall)."""
        if self.ack is None:
            self.first_seq = min(seqs)
            self.ack = self.first_seq - self.first_seq % BLOCK - 1  # a boot numbers from a block's start
        a, r = self.ack, self.ranges
        for x in seqs:
            if x == a + 1 and not r:  # in order, no hole: the common case
                a = x
            elif x > a:
                ranges_add(r, x, x)
        self.ack = a

    def cover(self, first: int, last: int) -> None:
        """Numbers stored, or settled (answered for by the meter without being sent): the ack may pass them."""
        if self.ack is not None and last > self.ack:
            ranges_add(self.ranges, max(first, self.ack + 1), last)

    def advance(self) -> None:
        """Move W over the ranges that touch it."""
        r = self.ranges
        while r and self.ack is not None and r[0][0] <= self.ack + 1:
            self.ack = max(self.ack, r[0][1])
            r.pop(0)

    def missing(self, first: int, last: int) -> int:
        """How many numbers of [first, last] are neither stored nor settled."""
        lo = first if self.ack is None else max(first, self.ack + 1)
        if lo > last:
            return 0
        return last - lo + 1 - ranges_covered(self.ranges, lo, last)

    def holes(self) -> list[tuple[int, int]]:
        """The runs of numbers missing below the newest stored one."""
        out = []
        prev = self.ack
        for a, b in self.ranges:
            if prev is not None and a > prev + 1:
                out.append((prev + 1, a - 1))
            prev = b
        return out

    def newest(self) -> int | None:
        """The newest sequence number stored (or settled)."""
        return self.ranges[-1][1] if self.ranges else self.ack


def ack_frames(headend: P.HeadEnd, acks: Iterable[tuple[bytes, int, int, int]], now: float) -> list[bytes]:
    """The framed, signed acknowledgements (device, command counter, W, TTL s): each carries the meter's next
    command counter, persisted in the transaction that stored what it acknowledges."""
    sign, t = headend.sign_ack, int(now)
    return [encode_frame(sign(dev, counter, w, t, ttl_s)) for dev, counter, w, ttl_s in acks]


def ack_ttl(ttl_s: int, drift: float | None) -> int:
    """An acknowledgement's TTL for a meter whose clock runs `drift` s ahead (None: not measured): its expiry in
    the meter's clock, as for a set-time command, or a meter ahead by more than the TTL refuses every ack."""
    return ttl_s + math.ceil(drift) if drift is not None and drift > 0 else ttl_s
