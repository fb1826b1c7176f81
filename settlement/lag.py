"""Settlement lag (invariant 6): how far the chain trails the matcher, in items and seconds.

Sans-I/O: callers pass the times. ``matched(seq, t)`` when the matcher sequenced an item,
``settled(first_seq, count, t)`` when a batch was confirmed on-chain.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LagSnapshot:
    """Current gap and the distribution of per-item settle delays seen so far (window)."""

    matched_seq: int
    settled_seq: int
    items: int
    oldest_unsettled_s: float
    p50_s: float
    p99_s: float
    samples: int


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class LagTracker:
    """Matched vs settled sequence, per-item delay percentiles over the last ``window`` items."""

    def __init__(self, settled_seq: int = 0, window: int = 100_000) -> None:
        self.matched_seq = settled_seq
        self.settled_seq = settled_seq
        self._pending: deque[tuple[int, float]] = deque()  # (seq, matched time), ascending seq
        self._delays: deque[float] = deque(maxlen=window)

    def matched(self, seq: int, t: float) -> None:
        """The matcher sequenced ``seq`` at time ``t`` (repeats and already-settled seqs are ignored)."""
        if seq <= self.matched_seq or seq <= self.settled_seq:
            return
        self.matched_seq = seq
        self._pending.append((seq, t))

    def settled(self, first_seq: int, count: int, t: float) -> None:
        """Items ``first_seq .. first_seq+count-1`` were confirmed on-chain at time ``t``."""
        last = first_seq + count - 1
        if last <= self.settled_seq:
            return
        self.settled_seq = last
        self.matched_seq = max(self.matched_seq, last)
        while self._pending and self._pending[0][0] <= last:
            _, t0 = self._pending.popleft()
            self._delays.append(max(0.0, t - t0))

    def snapshot(self, now: float) -> LagSnapshot:
        """Lag right now: unsettled item count, age of the oldest unsettled item, p50/p99 delay."""
        ordered = sorted(self._delays)
        oldest = now - self._pending[0][1] if self._pending else 0.0
        return LagSnapshot(
            matched_seq=self.matched_seq, settled_seq=self.settled_seq,
            items=self.matched_seq - self.settled_seq, oldest_unsettled_s=max(0.0, oldest),
            p50_s=percentile(ordered, 0.50), p99_s=percentile(ordered, 0.99), samples=len(ordered),
        )
