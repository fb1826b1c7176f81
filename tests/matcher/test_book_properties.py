"""Property tests of matcher.book.OrderBook and a lock-step run against the reference book."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_book import ReferenceBook

from matcher.book import OrderBook
from matcher.orders import (
    Accepted,
    CancelReason,
    Cancelled,
    CommandRejected,
    Event,
    Fill,
    Modified,
    Order,
    Rejected,
    RejectReason,
    Stp,
    Tif,
)

TICK = 10
LOT = 100
MID = 1000 * TICK
OWNERS = ["alice", "bob", "carol", "dave"]

Op = tuple[Any, ...]


class Harness:
    """Drives a book from abstract ops, keeping the positions the reduce-only callback reads
    and a per-order ledger that every event is checked against."""

    def __init__(self, book_cls: Any, veto: bool) -> None:
        self.positions: dict[tuple[Any, int], int] = {}
        self.accounts: dict[int, tuple[Any, int]] = {}
        check = _veto if veto else None
        self.book = book_cls(7, TICK, LOT, position_of=self._pos, maker_check=check)

    def _pos(self, owner: str, sub: int) -> int:
        return self.positions.get((owner, sub), 0)

    def apply(self, op: Op, now: int) -> list[Event]:
        """Run one op and update positions from its fills."""
        kind = op[0]
        b = self.book
        if kind == "place":
            cid, stp, ro, expiry = op[2]
            o = Order(*op[1], cid=cid, stp=stp, reduce_only=ro, expiry=expiry)
            ev = b.place(o, now)
            self.accounts.setdefault(o.oid, (o.owner, o.sub))
        elif kind == "cancel":
            ev = b.cancel(op[1])
        elif kind == "cancel_cid":
            ev = b.cancel_by_client_id(*op[1:])
        elif kind == "cancel_all":
            ev = b.cancel_all(op[1], op[2], CancelReason.DEAD_MAN, op[3])
        elif kind == "modify":
            ev = b.modify(op[1], op[2], op[3], now)
        else:
            ev = b.expire(now)
        for e in ev:
            if isinstance(e, Fill):
                t = self.accounts[e.taker_id]
                m = self.accounts[e.maker_id]
                sign = 1 if e.taker_is_buy else -1
                self.positions[t] = self.positions.get(t, 0) + sign * e.size
                self.positions[m] = self.positions.get(m, 0) - sign * e.size
        return ev


def _veto(maker: Any, size: int, price: int) -> bool:
    # pure and deterministic, so both books get the same verdicts
    return (maker.oid * 7 + size // LOT + price // TICK) % 13 != 0


def random_flow(rng: random.Random, n: int) -> list[tuple[Op, int]]:
    """n (op, now) pairs over the whole command surface, including bad input."""
    ops: list[tuple[Op, int]] = []
    oid = 0
    now = 1000
    live_hint: list[int] = []
    for _ in range(n):
        now += rng.choice((0, 0, 0, 1, 2))
        r = rng.random()
        if r < 0.5 or not live_hint:
            oid += rng.choice((1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 0))  # 0: duplicate id
            is_buy = rng.random() < 0.5
            off = rng.randint(-6, 6)
            price = MID + (off if is_buy else -off) * TICK
            size = rng.randint(1, 8) * LOT
            bad = rng.random()
            if bad < 0.02:
                price += 3
            elif bad < 0.04:
                size += 7
            elif bad < 0.05:
                size = rng.choice((0, -LOT, 2**64, 2**70))
            elif bad < 0.06:
                price = rng.choice((0, -TICK, 2**64 * TICK))
            tif = rng.choices(list(Tif), weights=(40, 15, 10, 20, 5))[0]
            if tif == Tif.MARKET and rng.random() < 0.5:
                price += 1  # protection bounds need not be on a tick
            owner = rng.choice(OWNERS)
            sub = rng.randint(0, 1)
            cid = rng.randint(1, 6) if rng.random() < 0.3 else None
            stp = rng.choice(list(Stp))
            ro = rng.random() < 0.12
            expiry = now + rng.randint(-1, 4) if rng.random() < 0.2 else 0
            ops.append((("place", (oid, owner, sub, is_buy, price, size, tif),
                         (cid, stp, ro, expiry)), now))
            live_hint.append(oid)
        elif r < 0.6:
            ops.append((("cancel", rng.choice(live_hint) + rng.choice((0, 0, 0, 1000))), now))
        elif r < 0.63:
            ops.append((("cancel_cid", rng.choice(OWNERS), rng.randint(0, 1),
                         rng.randint(1, 6)), now))
        elif r < 0.65:
            ops.append((("cancel_all", rng.choice(OWNERS), rng.randint(0, 1),
                         rng.choice((None, True, False))), now))
        elif r < 0.95:
            target = rng.choice(live_hint[-30:])
            if rng.random() < 0.3:
                # same price, smaller size: the book and the reference look the price up
                ops.append((("modify_same", target, rng.randint(1, 8) * LOT), now))
            else:
                is_buy_guess = rng.random() < 0.5
                off = rng.randint(-6, 6)
                price = MID + (off if is_buy_guess else -off) * TICK
                if rng.random() < 0.02:
                    price += 1
                ops.append((("modify", target, price, rng.randint(1, 8) * LOT), now))
        else:
            ops.append((("expire",), now))
    return ops


def _resolve(op: Op, book: Any) -> Op:
    """Turn 'modify_same' into a modify at the order's current price (if it is live)."""
    if op[0] != "modify_same":
        return op
    o = book.get(op[1]) if isinstance(book, OrderBook) else book.find(op[1])
    price = o.price if o is not None else MID
    return ("modify", op[1], price, op[2])


def real_snapshot(b: OrderBook) -> tuple[object, ...]:
    """The real book in the reference's snapshot shape."""
    return (b._last_oid, b._fill_seq,
            [o.key() for o in b.iter_side(True)], [o.key() for o in b.iter_side(False)])


def check_not_crossed(b: OrderBook) -> None:
    """Invariant: best bid < best ask whenever both exist."""
    bid, ask = b.best_bid(), b.best_ask()
    assert bid is None or ask is None or bid < ask, (bid, ask)


class Ledger:
    """Per-order accounting: every accepted order's open size is tracked from its events, and
    must equal the book's view; each order reaches at most one terminal event."""

    def __init__(self) -> None:
        self.open: dict[int, int] = {}
        self.terminal: dict[int, str] = {}
        self.filled: dict[int, int] = {}

    def _end(self, oid: int, how: str) -> None:
        assert oid not in self.terminal, (oid, self.terminal[oid], how)
        self.terminal[oid] = how
        del self.open[oid]

    def feed(self, ev: list[Event], book: OrderBook) -> None:
        """Apply one command's events and check them against the book."""
        for e in ev:
            if isinstance(e, Rejected):
                # a refused submission is no order at all (its id may even be a live order's);
                # run_checked proves it changed nothing
                pass
            elif isinstance(e, Accepted):
                assert e.order_id not in self.open and e.size > 0
                assert e.order_id not in self.terminal
                self.open[e.order_id] = e.size
                self.filled[e.order_id] = 0
            elif isinstance(e, Fill):
                assert e.size > 0
                for oid, rem in ((e.taker_id, e.taker_remaining), (e.maker_id, e.maker_remaining)):
                    self.open[oid] -= e.size
                    self.filled[oid] += e.size
                    assert self.open[oid] == rem >= 0
                    if rem == 0:
                        self._end(oid, "filled")
            elif isinstance(e, Cancelled):
                assert self.open[e.order_id] == e.remaining > 0
                self._end(e.order_id, "cancelled")
            elif isinstance(e, Modified):
                assert e.order_id in self.open
                self.open[e.order_id] = e.size
            else:
                assert isinstance(e, CommandRejected)
        for oid, size in self.open.items():
            o = book.get(oid)
            assert o is not None and o.size == size, (oid, size, o)
        assert len(self.open) == len(book)


def _touched_makers(ev: list[Event], taker: int | None) -> list[int]:
    out: list[int] = []
    for e in ev:
        oid = e.maker_id if isinstance(e, Fill) else (
            e.order_id if isinstance(e, Cancelled) and e.order_id != taker else None)
        if oid is not None and (not out or out[-1] != oid):
            out.append(oid)
    return out


def run_checked(ops: list[tuple[Op, int]], veto: bool) -> Harness:
    """Run ops on the real book, checking the invariants after every command."""
    h = Harness(OrderBook, veto)
    b = h.book
    ledger = Ledger()
    for op, now in ops:
        op = _resolve(op, b)
        taker: int | None = None
        prio: list[int] = []
        before_sides = None
        if op[0] in ("place", "modify"):
            if op[0] == "place":
                taker, is_buy, tif = op[1][0], op[1][3], op[1][6]
            else:
                taker, tif = op[1], None
                live = b.get(op[1])
                is_buy = live.is_buy if live is not None else True
            prio = [o.oid for o in b.iter_side(not is_buy)]
            if tif == Tif.FOK:
                before_sides = ([o.key() for o in b.iter_side(True)],
                                [o.key() for o in b.iter_side(False)], b._fill_seq)
        before_hash = b.state_hash()
        ev = h.apply(op, now)
        if len(ev) == 1 and isinstance(ev[0], (Rejected, CommandRejected)):
            assert b.state_hash() == before_hash
        ledger.feed(ev, b)
        check_not_crossed(b)
        if op[0] in ("place", "modify"):
            # price-time priority: the makers a taker meets are a prefix of the priority order
            touched = _touched_makers(ev, taker)
            assert touched == prio[:len(touched)], (op, ev, prio)
            fills = [e for e in ev if isinstance(e, Fill)]
            prices = [f.price for f in fills]
            assert prices == sorted(prices, reverse=not fills[0].taker_is_buy) if fills else True
        if before_sides is not None and isinstance(ev[0], Accepted):
            filled = sum(e.size for e in ev if isinstance(e, Fill))
            if filled:
                assert filled == ev[0].size and not any(
                    isinstance(e, Cancelled) and e.order_id == taker for e in ev)
            else:
                assert taker is not None
                assert len(ev) == 2 and ev[-1] in (
                    Cancelled(taker, CancelReason.FOK, ev[0].size),
                    Cancelled(taker, CancelReason.REDUCE_ONLY, ev[0].size))
                assert before_sides == ([o.key() for o in b.iter_side(True)],
                                        [o.key() for o in b.iter_side(False)], b._fill_seq)
    for oid in ledger.open:
        assert b.get(oid) is not None
    return h


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("veto", [False, True])
def test_lockstep_with_reference(seed: int, veto: bool) -> None:
    rng = random.Random(seed)
    ops = random_flow(rng, 1500)
    real = Harness(OrderBook, veto)
    ref = Harness(ReferenceBook, veto)
    for i, (op, now) in enumerate(ops):
        op_real = _resolve(op, real.book)
        assert op_real == _resolve(op, ref.book)
        e1 = real.apply(op_real, now)
        e2 = ref.apply(op_real, now)
        assert e1 == e2, (i, op_real, e1, e2)
        if i % 50 == 0 or op[0] != "modify":
            assert real_snapshot(real.book) == ref.book.snapshot(), (i, op_real)
    assert real_snapshot(real.book) == ref.book.snapshot()
    assert real.book.depth(5) == ref.book.depth(5)
    for owner in OWNERS:
        for sub in (0, 1):
            assert real.book.open_size(owner, sub) == ref.book.open_size(owner, sub)
    assert real.positions == ref.positions
    fills = real.book._fill_seq
    assert fills > 100  # the flow really trades


@pytest.mark.parametrize("seed", range(6))
def test_invariants_random_flow(seed: int) -> None:
    run_checked(random_flow(random.Random(100 + seed), 2000), veto=seed % 2 == 1)


@st.composite
def flows(draw: st.DrawFn) -> list[tuple[Op, int]]:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 150))
    return random_flow(random.Random(seed), n)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(), st.booleans())
def test_invariants_hypothesis(ops: list[tuple[Op, int]], veto: bool) -> None:
    run_checked(ops, veto)


@settings(max_examples=100, deadline=None)
@given(flows(), st.booleans())
def test_lockstep_hypothesis(ops: list[tuple[Op, int]], veto: bool) -> None:
    real = Harness(OrderBook, veto)
    ref = Harness(ReferenceBook, veto)
    for op, now in ops:
        op = _resolve(op, real.book)
        assert real.apply(op, now) == ref.apply(op, now), op
    assert real_snapshot(real.book) == ref.book.snapshot()


def test_replay_gives_same_hash() -> None:
    ops = random_flow(random.Random(42), 3000)
    hashes = []
    for _ in range(2):
        h = Harness(OrderBook, veto=True)
        for op, now in ops:
            h.apply(_resolve(op, h.book), now)
        hashes.append(h.book.state_hash())
    assert hashes[0] == hashes[1]
