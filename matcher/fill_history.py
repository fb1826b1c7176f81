"""Per-owner memory of the ``fills`` channel, so fills never vanish with a connection.

A market maker whose connection drops keeps trading: its resting orders fill while it is away.
The ``orders`` and ``positions`` snapshots after a reconnect show where it stands, but not the
fills (price, size, fee, liquidity) that got it there. So every frame the ``fills`` channel
produces for an owner (fills, busts, liquidation notices) is recorded here whether or not anyone
listens, and ``subscribe`` with ``fills_after`` (docs/api.md) replays what came after the last
fill the client saw.

The record is bounded twice, oldest frames dropped first: a frame is kept while it is among its
owner's last ``per_owner`` (a busy owner cannot crowd out the others) and among the last
``total`` frames recorded for anyone (memory stays bounded however many owners trade over a long
uptime). A replay says whether it is provably complete: the fill the client names is still
recorded, or the client saw no fill and the record holds the owner's whole history. Otherwise
the client learns that frames are missing (the record was trimmed, or it begins after the fill:
its on-disk log, matcher/fill_log.py, was lost) instead of silently going on without them.
Sans-I/O: frames in, frames out; the server reloads it from the log at start.
"""
from __future__ import annotations

from collections import deque
from itertools import islice

# The key of a frame that is not a fill (a bust names an older fill; a liquidation none).
NOT_A_FILL = 0


class FillHistory:
    """The last ``per_owner`` ``fills``-channel frames of every owner, in the order sent."""

    def __init__(self, first_seq: int, per_owner: int, total: int = 1_000_000) -> None:
        # the first settlement seq this record can hold: the engine's next item when the
        # server started (everything before it was sent by an earlier process, or never)
        self.first_seq = first_seq
        self.per_owner = max(1, per_owner)
        self.total = max(1, total)
        # per owner: (arrival number, fill seq, frame), oldest first
        self._frames: dict[str, deque[tuple[int, int, bytes]]] = {}
        # the last `total` frames' (arrival number, owner), oldest first: the global window
        # (an entry whose frame the per-owner bound already dropped just leaves)
        self._arrivals: deque[tuple[int, str]] = deque()
        self._n = 0
        self._size = 0
        self._trimmed: set[str] = set()

    def record(self, owner: str, seq: int, frame: bytes) -> None:
        """Remember ``frame`` sent to ``owner``; ``seq`` is the fill's settlement sequence
        number, or :data:`NOT_A_FILL`."""
        d = self._frames.get(owner)
        if d is None:
            d = self._frames[owner] = deque()
        elif len(d) >= self.per_owner:
            d.popleft()
            self._size -= 1
            self._trimmed.add(owner)
        self._n += 1
        d.append((self._n, seq, frame))
        self._arrivals.append((self._n, owner))
        self._size += 1
        if len(self._arrivals) > self.total:
            self._leave_window()

    def _leave_window(self) -> None:
        n, owner = self._arrivals.popleft()
        d = self._frames.get(owner)
        if d and d[0][0] == n:  # still recorded: it goes
            d.popleft()
            self._size -= 1
            self._trimmed.add(owner)
            if not d:
                del self._frames[owner]

    def after(self, owner: str, seq: int) -> tuple[list[bytes], bool]:
        """The frames ``owner`` was sent after its fill ``seq`` (0: from the start of the
        record), and whether they are provably all of them."""
        d = self._frames.get(owner)
        if d is None:
            d = deque()
        if seq == NOT_A_FILL:
            complete = self.first_seq <= 1 and owner not in self._trimmed
            return [f for _, _, f in d], complete
        # newest first: a reconnecting client names a recent fill
        for i in range(len(d) - 1, -1, -1):
            if d[i][1] == seq:
                return [f for _, _, f in islice(d, i + 1, None)], True
        # not recorded (trimmed, before this process, or not this owner's): what is recorded
        # from the first later fill on, flagged incomplete
        start = next((i for i, (_, s, _) in enumerate(d) if s > seq), len(d))
        return [f for _, _, f in islice(d, start, None)], False

    def frames(self, owner: str | None = None) -> int:
        """How many frames are recorded for ``owner`` (None: for everyone)."""
        if owner is None:
            return self._size
        d = self._frames.get(owner)
        return 0 if d is None else len(d)
