"""The matcher's GC policy: automatic collection off, sweeps that still find cycles, undo."""
from __future__ import annotations

import gc

from crossbook import gc_policy


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_take_over_sweep_and_hand_back() -> None:
    assert gc.isenabled()
    gc_policy.take_over()
    try:
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # start-up state is out of every later scan
        frozen = gc.get_freeze_count()
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        del a, b
        found, took = gc_policy.sweep()
        assert found >= 2 and took >= 0
        assert not gc.isenabled()
        assert gc.get_freeze_count() >= frozen  # the sweep's survivors joined the frozen set
    finally:
        gc_policy.hand_back()
    assert gc.isenabled() and gc.get_freeze_count() == 0
