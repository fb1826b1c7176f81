"""Sans-I/O batch builder: a stream of ``(seq, item)`` in, contiguous batches out.

It cuts batches by item count, calldata bytes, a gas estimate and the age of the oldest
waiting item. The gas model is an upper bound (every slot priced as if fresh); the relayer
scales it by what simulating recent batches measured (:meth:`Batcher.set_gas_scale`), so
``max_gas`` caps the gas a batch is expected to use, not its worst case. A fill is priced at
its marginal cost within the batch it would join: the
contract verifies each distinct order once per batch and pays cold storage once per batch for
each account, position and nonce word, so repeat accounts and resting orders cost far less than
a first touch (``now`` is always passed in, so tests drive the clock). It knows the
sequence number the contract accepts next and only ever emits batches that start exactly
where the previous one ended: no overlap, no gap (invariant 3). The relayer resets it to the
chain's ``nextSeq`` whenever the chain says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from crossbook.batch_codec import (
    FILL_REF_SIZE,
    HEADER_SIZE,
    MAX_ITEMS,
    SIGNED_ORDER_SIZE,
    TABLE_HEADER_SIZE,
    encode_batch,
    encoded_item_size,
)
from crossbook.protocol_types import FillItem, ForcedItem, FundingItem, Item, Order, TransferItem, WithdrawItem

# Upper bounds of execution gas per non-fill item (measured on anvil with fresh storage slots,
# then rounded up); only used to keep a batch under the block gas limit, the node charges gasUsed.
DEFAULT_ITEM_GAS: Mapping[type, int] = {
    WithdrawItem: 140_000,
    TransferItem: 120_000,
    FundingItem: 60_000,
    ForcedItem: 140_000,
}


_PPM = 1_000_000


class SequenceGap(Exception):
    """An item arrived with a sequence number past the one expected: the source skipped."""


@dataclass(frozen=True)
class FillGas:
    """Execution gas of a fill by what it touches first in its batch (upper bounds: measured
    with `crossbook bench gas` and Gas.t.sol, then rounded up; a fresh storage slot is 22,100)."""

    base: int = 26_000  # every fill on warm state: checks, trade maths, both margin checks, writes
    order: int = 6_000  # an order new to the batch's table: EIP-712 hash + ecrecover
    account: int = 45_000  # a sub-account new to the batch: cold header, positions, collateral
    position: int = 25_000  # an (account, market) new to the batch: the position slot may be fresh
    nonce_word: int = 25_000  # an owner's nonce-state word (128 nonces) new to the batch
    lane: int = 25_000  # a partial fill's filled-amount lane word (4 nonces) new to the batch


@dataclass(frozen=True)
class BatchLimits:
    """When to cut a batch. A batch always holds at least one item, whatever its size."""

    # The defaults are what `crossbook bench settle` measured best on 1-second 30M-gas blocks.
    # The item count rarely binds: gas and calldata cut a batch first under load, age when idle.
    max_items: int = 2_000
    # under the 128 kB transaction size geth-style pools accept (anvil accepts more; a chain
    # need not)
    max_calldata_bytes: int = 120_000
    # Expected gas (the model's bound times the relayer's calibration). Two batches share a 30M
    # block: a node adds a transaction while its gas *limit* (gasUsed x 1.05 + 50k, see
    # RelayerConfig) fits what the block has left, and 14.5M + 14.5M x 1.05 + 50k < 30M. It is
    # also under EIP-7825's per-transaction cap of 2^24 gas with that margin.
    max_gas: int = 14_500_000
    max_age_s: float = 0.25
    base_gas: int = 80_000  # intrinsic 21k + settle() overhead, rounded up
    calldata_gas_per_byte: int = 16
    item_gas: Mapping[type, int] = field(default_factory=lambda: dict(DEFAULT_ITEM_GAS))
    fill_gas: FillGas = field(default_factory=FillGas)

    def gas_of(self, item: Item) -> int:
        """Upper gas estimate of one item alone in a batch, its calldata included."""
        return _Footprint(self).add(item)[1]


class _Footprint:
    """What the items of one prospective batch touch, to price each next item at its marginal
    bytes and gas (the order table, warm storage and verified orders are shared in a batch)."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self.orders: set[tuple[Order, bytes]] = set()
        self.slots: set[tuple[object, ...]] = set()

    def _first(self, key: tuple[object, ...]) -> bool:
        if key in self.slots:
            return False
        self.slots.add(key)
        return True

    def add(self, item: Item) -> tuple[int, int]:
        """Marginal (bytes, gas) of `item` after everything added before; records its footprint."""
        lim = self.limits
        if not isinstance(item, FillItem):
            size = encoded_item_size(item)
            return size, lim.item_gas[type(item)] + lim.calldata_gas_per_byte * size
        fg = lim.fill_gas
        size, gas = FILL_REF_SIZE, fg.base
        if self._first(("table",)):
            size += TABLE_HEADER_SIZE
        for order, sig in ((item.taker, item.taker_sig), (item.maker, item.maker_sig)):
            if (order, sig) not in self.orders:
                self.orders.add((order, sig))
                size += SIGNED_ORDER_SIZE
                gas += fg.order
            owner = order.owner.lower()
            gas += fg.account if self._first(("acct", owner, order.subaccount)) else 0
            gas += fg.position if self._first(("pos", owner, order.subaccount, order.market)) else 0
            gas += fg.nonce_word if self._first(("word", owner, order.nonce >> 7)) else 0
            if item.size < order.size and self._first(("lane", owner, order.nonce >> 2)):
                gas += fg.lane
        return size, gas + lim.calldata_gas_per_byte * size


@dataclass(frozen=True)
class Batch:
    """One ``settle`` payload: items ``first_seq .. first_seq + count - 1``."""

    first_seq: int
    items: tuple[Item, ...]
    size_bytes: int
    gas_estimate: int

    @property
    def count(self) -> int:
        """Number of items."""
        return len(self.items)

    @property
    def end_seq(self) -> int:
        """The sequence number after the last item (the contract's nextSeq once settled)."""
        return self.first_seq + len(self.items)

    def encode(self) -> bytes:
        """The packed batch bytes (docs/protocol.md section 5)."""
        return encode_batch(self.first_seq, self.items)


class Batcher:
    """Accumulates items and emits gap-free, non-overlapping batches."""

    def __init__(self, next_seq: int, limits: BatchLimits | None = None) -> None:
        self.limits = limits or BatchLimits()
        self._cap: int | None = None
        self._scale_ppm = _PPM  # measured gas / the model's bound; the bound itself until told
        self.reset(next_seq)

    def reset(self, next_seq: int) -> None:
        """Drop everything waiting and start again at ``next_seq`` (the chain's nextSeq)."""
        self.emit_seq = next_seq  # first seq of the next batch
        # (item, bytes, gas, arrival); bytes and gas are marginal, priced against the items before
        # it since the head of the queue (exact for the batch that starts there)
        self._pending: list[tuple[Item, int, int, float]] = []
        self._footprint = _Footprint(self.limits)

    @property
    def expected_seq(self) -> int:
        """The seq :meth:`add` accepts next."""
        return self.emit_seq + len(self._pending)

    @property
    def pending(self) -> int:
        """Items waiting for a batch."""
        return len(self._pending)

    def set_item_cap(self, cap: int | None) -> None:
        """Temporarily cap the items per batch (the relayer splits a failing batch this way)."""
        self._cap = None if cap is None else max(1, cap)

    def set_gas_scale(self, used: int, bound: int) -> None:
        """Expect batches to use ``used / bound`` of the model's gas bound (a simulation's
        ratio, with the caller's headroom); never more than the bound itself."""
        self._scale_ppm = max(1, min(_PPM, used * _PPM // max(1, bound)))

    @property
    def gas_scale_ppm(self) -> int:
        """Expected gas per unit of the model's bound, in ppm."""
        return self._scale_ppm

    @property
    def item_cap(self) -> int:
        """Items per batch in force now."""
        cap = min(self.limits.max_items, MAX_ITEMS)
        return cap if self._cap is None else min(cap, self._cap)

    def add(self, seq: int, item: Item, now: float) -> bool:
        """Queue ``item``. Returns False for a seq already queued or emitted (a replay after a
        source restart is harmless); raises :class:`SequenceGap` for a seq past the expected one."""
        if seq < self.expected_seq:
            return False
        if seq > self.expected_seq:
            raise SequenceGap(f"expected seq {self.expected_seq}, got {seq}")
        size, gas = self._footprint.add(item)
        self._pending.append((item, size, gas, now))
        return True

    def _fit(self) -> int:
        """How many leading pending items fit in one batch (at least one if any wait)."""
        lim = self.limits
        size, gas, n = HEADER_SIZE, lim.base_gas + lim.calldata_gas_per_byte * HEADER_SIZE, 0
        max_bound = lim.max_gas * _PPM // self._scale_ppm  # max_gas in the model's units
        for _, b, g, _ in self._pending[: self.item_cap]:
            if n and (size + b > lim.max_calldata_bytes or gas + g > max_bound):
                break
            size, gas, n = size + b, gas + g, n + 1
        return n

    def full(self) -> bool:
        """True when the waiting items fill a batch (more would not fit)."""
        if not self._pending:
            return False
        return len(self._pending) >= self.item_cap or self._fit() < len(self._pending)

    def deadline(self) -> float | None:
        """When the oldest waiting item reaches ``max_age_s`` (None if nothing waits)."""
        return self._pending[0][3] + self.limits.max_age_s if self._pending else None

    def ready(self, now: float) -> bool:
        """Whether :meth:`take` would emit a batch at ``now``."""
        deadline = self.deadline()
        return self.full() or (deadline is not None and now >= deadline)

    def take(self, now: float, force: bool = False) -> Batch | None:
        """Emit the next batch if one is due (or ``force`` and anything waits)."""
        if not self._pending or not (force or self.ready(now)):
            return None
        n = self._fit()
        chunk, self._pending = self._pending[:n], self._pending[n:]
        lim = self.limits
        size = HEADER_SIZE + sum(c[1] for c in chunk)
        gas = lim.base_gas + lim.calldata_gas_per_byte * HEADER_SIZE + sum(c[2] for c in chunk)
        batch = Batch(self.emit_seq, tuple(c[0] for c in chunk), size, gas)
        self.emit_seq += n
        # the rest now heads the next batch: price it again from scratch
        rest, self._pending = self._pending, []
        self._footprint = _Footprint(self.limits)
        for item, _, _, arrival in rest:
            size_i, gas_i = self._footprint.add(item)
            self._pending.append((item, size_i, gas_i, arrival))
        return batch
