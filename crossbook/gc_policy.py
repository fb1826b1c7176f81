"""Garbage-collector policy for a latency-sensitive service process (the matcher).

CPython's cyclic collector runs whenever allocations pass a threshold, in the middle of
whatever the process is doing: in the matcher that is an order's handling, and a collection
of the older generations stops every connection for milliseconds (measured under the
websocket benchmark: gen-1 pauses of 1-5 ms fourteen times in 4 s, one gen-2 pause of 33 ms;
they were most of the ack tail). Reference counting already frees everything the engine
drops (a run of 10,000 orders and 7,000 cancels leaves no cyclic garbage), so the collector
only has the network layer's occasional cycles to find.

The policy here: collect once at start-up and freeze the survivors (the recovered state is
never scanned again), switch the automatic collector off, and sweep at a fixed interval -
one collection over the objects created since the previous sweep, whose survivors are then
frozen too, so each sweep costs what one interval allocated, not the whole heap. Frozen
objects are still freed by reference counting; only a cycle that was alive at a sweep and
dies later is kept (a closed connection's task and frames: a few kilobytes per connection).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

SWEEP_S = 30.0  # the matcher's sweep period (MatcherOptions.gc_sweep_s)


def take_over() -> None:
    """Collect once, freeze what survives and turn the automatic collector off."""
    gc.collect()
    gc.freeze()
    gc.disable()


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block (then as before): for loading millions of
    objects that make no cyclic garbage (a journal replay, the fill log), where the
    collector's passes over the growing heap would cost more than the loading."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def sweep() -> tuple[int, float]:
    """Collect the objects created since the last sweep, then freeze the survivors.
    Returns (unreachable objects found, seconds the collection took)."""
    t0 = time.perf_counter()
    found = gc.collect()
    gc.freeze()
    return found, time.perf_counter() - t0


def hand_back() -> None:
    """Undo :func:`take_over`: everything scannable again, automatic collection on."""
    gc.unfreeze()
    gc.enable()


async def sweep_every(interval_s: float) -> None:
    """Run :func:`sweep` every ``interval_s`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        found, took = sweep()
        log.debug("gc sweep: %d unreachable objects, %.1f ms", found, took * 1000)
