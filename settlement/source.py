"""The item source the relayer consumes: a sequenced stream that can restart from any seq.

The matcher's websocket stream will implement :class:`ItemSource` too; the relayer never keeps
its own copy of what it settled, it asks the source again from the chain's ``nextSeq``.
"""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Iterable, Protocol, runtime_checkable

import msgspec

from crossbook.protocol_types import Item

FIRST_SEQ = 1  # docs/protocol.md: a fresh contract has nextSeq() == 1


class SourceGap(Exception):
    """The source cannot serve the requested seq (pruned, or never existed)."""


@runtime_checkable
class ItemSource(Protocol):
    """A gap-free stream of ``(seq, item)`` starting at any sequence number."""

    def stream(self, from_seq: int) -> AsyncIterator[tuple[int, Item]]:
        """Yield ``(seq, item)`` for ``seq = from_seq, from_seq + 1, ...``; waits for new items
        while the source is open and ends once it is closed and drained."""
        ...

    def matched_at(self, seq: int) -> float | None:
        """Wall-clock time (``time.time()``) the matcher sequenced ``seq``, if known."""
        ...


class InMemorySource:
    """An in-process :class:`ItemSource` backed by a list (tests, benchmarks, the embedded stack)."""

    def __init__(self, items: Iterable[Item] = (), first_seq: int = FIRST_SEQ) -> None:
        self.first_seq = first_seq
        self._items: list[Item] = []
        self._times: list[float] = []
        self._closed = False
        self._changed = asyncio.Event()
        for it in items:
            self.append(it)

    @property
    def head(self) -> int:
        """The last sequence number appended (``first_seq - 1`` when empty)."""
        return self.first_seq + len(self._items) - 1

    def append(self, item: Item, now: float | None = None) -> int:
        """Sequence a new item; returns its seq."""
        if self._closed:
            raise RuntimeError("source is closed")
        self._items.append(item)
        self._times.append(time.time() if now is None else now)
        self._wake()
        return self.head

    def close(self) -> None:
        """No more items: streams end once they have yielded everything."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        # set-and-replace so every waiting stream wakes once and then waits on a fresh event
        self._changed.set()
        self._changed = asyncio.Event()

    def matched_at(self, seq: int) -> float | None:
        """When ``seq`` was appended."""
        i = seq - self.first_seq
        return self._times[i] if 0 <= i < len(self._times) else None

    async def stream(self, from_seq: int) -> AsyncIterator[tuple[int, Item]]:
        """See :meth:`ItemSource.stream`."""
        if from_seq < self.first_seq:
            raise SourceGap(f"seq {from_seq} precedes the source's first seq {self.first_seq}")
        seq = from_seq
        while True:
            i = seq - self.first_seq
            if i < len(self._items):
                yield seq, self._items[i]
                seq += 1
                continue
            if self._closed:
                return
            await self._changed.wait()

    # --- file form, so a relayer subprocess can be fed the same stream (kill -9 tests) ------
    def dump(self, path: str) -> None:
        """Write the items as one msgpack list."""
        with open(path, "wb") as f:
            f.write(msgspec.msgpack.encode(self._items))

    @classmethod
    def load(cls, path: str, closed: bool = True) -> "InMemorySource":
        """Read a file written by :meth:`dump`."""
        with open(path, "rb") as f:
            items = msgspec.msgpack.decode(f.read(), type=list[Item])
        src = cls(items)
        if closed:
            src.close()
        return src
