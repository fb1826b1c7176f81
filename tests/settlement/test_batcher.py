"""Batching rules (sans-I/O)."""
from __future__ import annotations

import pytest

from crossbook.batch_codec import (
    FILL_BATCH_SIZE,
    FILL_REF_SIZE,
    FUNDING_SIZE,
    HEADER_SIZE,
    SIGNED_ORDER_SIZE,
    TABLE_HEADER_SIZE,
    decode_batch,
)
from crossbook.protocol_types import FillItem, FundingItem, Order
from settlement.batcher import Batch, Batcher, BatchLimits, SequenceGap
from settlement.lag import LagTracker, percentile

_O = Order("0x" + "11" * 20, 0, 0, True, False, 1, 1, 1, 1, 0)
FILL = FillItem(_O, b"\x01" * 65, _O, b"\x02" * 65, 1, 1, 0, 0)


def fill(i: int, owner: str = "0x" + "22" * 20) -> FillItem:
    """A fill between two fresh orders of two fixed owners (nonce i on both sides)."""
    taker = Order(owner, 0, 0, True, False, 1, 1, i, 1, 0)
    maker = Order("0x" + "33" * 20, 0, 0, False, False, 1, 1, i, 1, 0)
    return FillItem(taker, b"\x01" * 65, maker, b"\x02" * 65, 1, 1, 0, 0)


def fund(i: int) -> FundingItem:
    return FundingItem(0, i)


def test_cuts_by_item_count_and_emits_contiguous_batches() -> None:
    b = Batcher(7, BatchLimits(max_items=3, max_age_s=10))
    for s in range(7, 14):
        b.add(s, fund(s), now=0.0)
    batches = []
    while (x := b.take(now=0.0)) is not None:
        batches.append(x)
    assert [(x.first_seq, x.count) for x in batches] == [(7, 3), (10, 3)]
    assert b.pending == 1 and b.take(now=0.0) is None  # one item, not yet old: waits
    last = b.take(now=0.0, force=True)
    assert last is not None and (last.first_seq, last.count) == (13, 1)
    first_seq, items = decode_batch(batches[1].encode())
    assert first_seq == 10 and items == [fund(10), fund(11), fund(12)]


def test_cuts_by_age() -> None:
    b = Batcher(1, BatchLimits(max_items=100, max_age_s=0.5))
    b.add(1, fund(1), now=10.0)
    b.add(2, fund(2), now=10.3)
    assert b.deadline() == 10.5
    assert not b.ready(10.4) and b.take(10.4) is None
    batch = b.take(10.5)
    assert batch is not None and batch.count == 2 and b.deadline() is None


def test_cuts_by_calldata_bytes() -> None:
    two = HEADER_SIZE + 2 * FILL_BATCH_SIZE - TABLE_HEADER_SIZE  # one table header
    b = Batcher(1, BatchLimits(max_items=100, max_calldata_bytes=two + FUNDING_SIZE, max_age_s=10))
    for s in range(1, 5):
        b.add(s, fill(s), now=0.0)
    x = b.take(0.0)
    assert x is not None and x.count == 2 and x.size_bytes == two
    assert len(x.encode()) == x.size_bytes
    # the rest is priced again from the head of the next batch: it holds the other two
    y = b.take(0.0, force=True)
    assert y is not None and y.count == 2 and len(y.encode()) == y.size_bytes == two


def test_repeated_orders_and_accounts_are_priced_once_per_batch() -> None:
    lim = BatchLimits(max_items=100, max_age_s=10)
    b = Batcher(1, lim)
    for s in range(1, 4):
        b.add(s, FILL, now=0.0)  # the same two signed orders three times
    x = b.take(0.0, force=True)
    assert x is not None and x.count == 3
    assert len(x.encode()) == x.size_bytes == HEADER_SIZE + TABLE_HEADER_SIZE + 2 * SIGNED_ORDER_SIZE + 3 * FILL_REF_SIZE
    fg = lim.fill_gas
    first = lim.gas_of(FILL)
    assert x.gas_estimate == lim.base_gas + 16 * HEADER_SIZE + first + 2 * (fg.base + 16 * FILL_REF_SIZE)
    # fresh orders of accounts already in the batch: signatures and calldata, no cold storage
    b.add(4, fill(1), now=0.0)
    b.add(5, fill(2), now=0.0)
    y = b.take(0.0, force=True)
    assert y is not None and len(y.encode()) == y.size_bytes
    second = fg.base + 2 * fg.order + 16 * (FILL_REF_SIZE + 2 * SIGNED_ORDER_SIZE)
    assert y.gas_estimate == lim.base_gas + 16 * HEADER_SIZE + lim.gas_of(fill(1)) + second
    # a partial fill also prices its filled-amount lane word
    partial = FillItem(_O, b"\x01" * 65, Order("0x" + "44" * 20, 0, 0, False, False, 1, 5, 9, 1, 0),
                       b"\x03" * 65, 1, 1, 0, 0)
    assert lim.gas_of(partial) == lim.gas_of(fill(1)) + fg.lane


def test_cuts_by_gas_and_always_takes_one_item() -> None:
    lim = BatchLimits(max_items=100, max_gas=1, max_age_s=10)  # not even one item fits
    b = Batcher(1, lim)
    b.add(1, FILL, 0.0)
    b.add(2, FILL, 0.0)
    x = b.take(0.0)
    assert x is not None and x.count == 1  # a lone oversized item still goes: the chain decides
    fills = [fill(s, owner="0x" + f"{s:02x}" * 20) for s in range(1, 8)]  # distinct takers, one maker
    probe = Batcher(1, BatchLimits(max_items=3, max_age_s=10))
    for s in range(1, 4):
        probe.add(s, fills[s - 1], 0.0)
    three = probe.take(0.0)
    assert three is not None and three.count == 3
    assert three.gas_estimate < lim.base_gas + 16 * HEADER_SIZE + 3 * lim.gas_of(fills[0])  # the maker is shared
    lim2 = BatchLimits(max_items=100, max_gas=three.gas_estimate, max_age_s=10)
    b2 = Batcher(1, lim2)
    for s in range(1, 8):
        b2.add(s, fills[s - 1], 0.0)
    y = b2.take(0.0)
    assert y is not None and y.count == 3 and y.gas_estimate <= lim2.max_gas


def test_gas_scale_sizes_batches_by_measured_gas() -> None:
    """max_gas caps the expected gas: the model's bound times the ratio simulations measured."""
    fills = [fill(s, owner="0x" + f"{s:02x}" * 20) for s in range(1, 41)]
    one = Batcher(1, BatchLimits(max_items=1, max_age_s=10))
    one.add(1, fills[0], 0.0)
    single = one.take(0.0)
    assert single is not None
    lim = BatchLimits(max_items=100, max_gas=4 * single.gas_estimate, max_age_s=10)

    def first_batch(b: Batcher) -> Batch:
        for s in range(1, 41):
            b.add(s, fills[s - 1], 0.0)
        x = b.take(0.0)
        assert x is not None
        return x

    worst = first_batch(Batcher(1, lim))
    assert worst.gas_estimate <= lim.max_gas < worst.gas_estimate + lim.gas_of(fills[0])
    scaled = Batcher(1, lim)
    scaled.set_gas_scale(1, 3)  # simulations used a third of the bound
    assert scaled.gas_scale_ppm == 333_333
    grown = first_batch(scaled)
    assert grown.count > 2 * worst.count
    assert grown.gas_estimate * 333_333 // 1_000_000 <= lim.max_gas  # expected gas within the cap
    capped = Batcher(1, lim)
    capped.set_gas_scale(5, 1)  # never more than the bound itself
    assert capped.gas_scale_ppm == 1_000_000 and first_batch(capped).count == worst.count


def test_replays_are_ignored_and_gaps_refused() -> None:
    b = Batcher(5, BatchLimits(max_items=2, max_age_s=10))
    assert b.add(4, fund(4), 0.0) is False  # already settled on-chain
    assert b.add(5, fund(5), 0.0) and b.add(6, fund(6), 0.0)
    assert b.add(5, fund(5), 0.0) is False  # the source restarted a little early
    with pytest.raises(SequenceGap):
        b.add(8, fund(8), 0.0)
    x = b.take(0.0)
    assert x is not None and (x.first_seq, x.end_seq) == (5, 7)
    assert b.add(6, fund(6), 0.0) is False  # emitted already
    assert b.expected_seq == 7


def test_reset_and_item_cap_split() -> None:
    b = Batcher(1, BatchLimits(max_items=8, max_age_s=10))
    for s in range(1, 9):
        b.add(s, fund(s), 0.0)
    b.reset(3)  # the chain says 3: drop everything, restart there
    assert b.pending == 0 and b.expected_seq == 3
    b.set_item_cap(8 // 2)
    for s in range(3, 11):
        b.add(s, fund(s), 0.0)
    x = b.take(0.0)
    assert x is not None and (x.first_seq, x.count) == (3, 4)
    b.set_item_cap(None)
    assert b.item_cap == 8


def test_lag_tracker_items_and_percentiles() -> None:
    lag = LagTracker(settled_seq=0)
    for s in range(1, 11):
        lag.matched(s, t=float(s))
    snap = lag.snapshot(now=10.0)
    assert snap.items == 10 and snap.oldest_unsettled_s == 9.0
    lag.settled(1, 5, t=11.0)  # delays 10, 9, 8, 7, 6
    lag.settled(6, 5, t=12.0)  # delays 6, 5, 4, 3, 2
    snap = lag.snapshot(now=12.0)
    assert snap.items == 0 and snap.settled_seq == 10 and snap.samples == 10
    assert snap.p50_s == 6.0 and snap.p99_s == 10.0
    assert percentile([], 0.5) == 0.0
