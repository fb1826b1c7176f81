"""Per-connection limits of the websocket API: message rate, message size, queue depths.

The open-orders bound is the engine's (``EngineConfig.max_open_orders_per_account``, enforced
inside :meth:`matcher.engine.Engine.apply` so a replay reaches the same decision); it is exposed
here so the API can report it in the ``hello`` frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from matcher.engine import EngineConfig


@dataclass(frozen=True)
class Limits:
    """Every limit the API enforces (see docs/api.md, "Limits")."""

    # token bucket: sustained requests per second per connection, and the burst it allows
    msgs_per_s: float = 2_000.0
    burst: int = 2_000
    # a connection with this many rate-limited messages within one second is
    # disconnected (close code 1008): answering a flood with errors would itself be a flood
    flood_disconnect_after: int = 200
    # larger frames get a MESSAGE_TOO_LARGE error; frames above the hard limit are refused by
    # the websocket layer itself (close 1009) before they are even buffered in full
    max_message_bytes: int = 16 * 1024
    hard_max_message_bytes: int = 64 * 1024
    # per-connection outbound queue (frames); a consumer this far behind is disconnected
    send_queue_frames: int = 10_000
    # stream (relayer) connections read the engine outbox directly; this is their chunk size
    stream_chunk: int = 512
    max_subscriptions: int = 64
    # engine input queue: requests beyond it are refused with OVERLOADED rather than buffered
    engine_queue: int = 100_000

    def open_orders(self, config: EngineConfig) -> int:
        """Open orders allowed per sub-account (the engine enforces it)."""
        return config.max_open_orders_per_account


class TokenBucket:
    """Classic token bucket; :meth:`take` is O(1) and allocation-free."""

    __slots__ = ("rate", "capacity", "tokens", "stamp", "_clock")

    def __init__(self, rate: float, capacity: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self._clock = clock
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        """Consume ``n`` tokens if available; False (nothing consumed) otherwise."""
        now = self._clock()
        t = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if t > self.capacity:
            t = self.capacity
        if t < n:
            self.tokens = t
            return False
        self.tokens = t - n
        return True


__all__ = ["Limits", "TokenBucket"]
