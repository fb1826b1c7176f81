"""An L2 book maintained from the matcher's ``book.<market>`` snapshot + deltas."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict


class GapDetected(Exception):
    """A delta's ``prev_seq`` did not follow the last applied ``seq``: the book is invalid
    until a fresh snapshot arrives."""


@dataclass
class OrderBook:
    """Price levels of one market (``price -> total size``, protocol units).

    ``valid`` is False until a snapshot is applied and again after a gap is detected."""

    market: int
    bids: SortedDict = field(default_factory=SortedDict)
    asks: SortedDict = field(default_factory=SortedDict)
    seq: int = -1
    valid: bool = False

    def apply(self, msg: dict[str, Any]) -> None:
        """Apply one ``book`` message; raises :class:`GapDetected` (and invalidates the book)
        when a delta does not continue the sequence."""
        if msg["kind"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
            self._levels(self.bids, msg["bids"])
            self._levels(self.asks, msg["asks"])
            self.seq = int(msg["seq"])
            self.valid = True
            return
        if not self.valid or int(msg["prev_seq"]) != self.seq:
            expected = self.seq
            self.invalidate()
            raise GapDetected(f"book.{self.market}: prev_seq {msg['prev_seq']} != {expected}")
        self._levels(self.bids, msg["bids"])
        self._levels(self.asks, msg["asks"])
        self.seq = int(msg["seq"])

    @staticmethod
    def _levels(side: SortedDict, levels: list[list[int]]) -> None:
        for px, sz in levels:
            if sz == 0:
                side.pop(px, None)
            else:
                side[px] = sz

    def invalidate(self) -> None:
        """Forget the book (after a gap or a reconnect) until the next snapshot."""
        self.bids.clear()
        self.asks.clear()
        self.valid = False
        self.seq = -1

    def best_bid(self) -> tuple[int, int] | None:
        """``(price, size)`` of the best bid, or None."""
        if not self.bids:
            return None
        px, sz = self.bids.peekitem(-1)
        return int(px), int(sz)

    def best_ask(self) -> tuple[int, int] | None:
        """``(price, size)`` of the best ask, or None."""
        if not self.asks:
            return None
        px, sz = self.asks.peekitem(0)
        return int(px), int(sz)

    def top(self, depth: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Best ``depth`` levels per side, best first."""
        bids = [(int(p), int(s)) for p, s in reversed(self.bids.items()[-depth:])]
        asks = [(int(p), int(s)) for p, s in self.asks.items()[:depth]]
        return bids, asks
