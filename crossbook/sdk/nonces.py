"""Order / withdrawal / transfer nonces: sequential per owner, optionally persisted.

Nonces are owner-wide (docs/protocol.md section 4) and the contract packs the fill amounts of
four consecutive nonces into one storage slot, so sequential nonces are also the cheapest to
settle. A process that restarts must never reuse one (``REPLAYED_NONCE``, or worse, a shared
fill budget), so without a file the counter starts at the current time in microseconds; with
a file it resumes from a persisted high-water mark, reserved in blocks so a busy bot does not
write the file on every order.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

_BLOCK = 1_000


class NonceManager:
    """Hands out increasing nonces per owner (thread safe)."""

    def __init__(self, path: str | Path | None = None, start: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._start = start
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock = threading.Lock()
        self._saved: dict[str, int] = {}
        if self.path is not None and self.path.exists():
            self._saved = {k.lower(): int(v) for k, v in json.loads(self.path.read_text()).items()}

    def _initial(self, owner: str) -> int:
        if owner in self._saved:
            return self._saved[owner]
        if self._start is not None:
            return self._start
        # microseconds since the epoch: above anything an earlier run handed out one per
        # order, and far below 2**64
        return time.time_ns() // 1_000

    def next(self, owner: str) -> int:
        """The owner's next unused nonce."""
        key = owner.lower()
        with self._lock:
            n = self._next.get(key)
            if n is None:
                n = self._initial(key)
            self._next[key] = n + 1
            if self.path is not None and n + 1 > self._reserved.get(key, -1):
                self._reserved[key] = n + _BLOCK
                self._persist()
            return n

    def observe(self, owner: str, used: int) -> None:
        """Record a nonce used elsewhere (e.g. a pre-signed order) so it is never handed out."""
        key = owner.lower()
        with self._lock:
            if used + 1 > self._next.get(key, self._initial(key)):
                self._next[key] = used + 1

    def _persist(self) -> None:
        assert self.path is not None
        self._saved.update(self._reserved)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._saved))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new mark, never half
