"""Unit tests of matcher.book.OrderBook: each order type, cancel/modify/STP path and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from matcher.book import OrderBook
from matcher.orders import (
    Accepted,
    CancelReason,
    Cancelled,
    CommandRejected,
    Fill,
    Modified,
    Order,
    Rejected,
    RejectReason,
    Stp,
    Tif,
)

TICK = 100
LOT = 10
U64 = 2**64 - 1


def mk(**kw: Any) -> OrderBook:
    return OrderBook(3, TICK, LOT, **kw)


def od(oid: int, owner: str, is_buy: bool, price: int, size: int, tif: Tif = Tif.GTC,
       **kw: Any) -> Order:
    return Order(oid, owner, 0, is_buy, price, size, tif, **kw)


def fills(ev: list[Any]) -> list[tuple[int, int, int]]:
    """(maker id, price, size) of each fill."""
    return [(e.maker_id, e.price, e.size) for e in ev if isinstance(e, Fill)]


def book_with_asks() -> OrderBook:
    """Asks: 1000 x (10 by m1, 20 by m2), 1100 x 30 by m3."""
    b = mk()
    b.place(od(1, "m1", False, 1000, 10), 0)
    b.place(od(2, "m2", False, 1000, 20), 0)
    b.place(od(3, "m3", False, 1100, 30), 0)
    return b


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(price=1050), RejectReason.OFF_TICK),
        (dict(size=15), RejectReason.OFF_LOT),
        (dict(size=0), RejectReason.BAD_SIZE),
        (dict(size=-10), RejectReason.BAD_SIZE),
        (dict(price=0), RejectReason.BAD_PRICE),
        (dict(price=-100), RejectReason.BAD_PRICE),
        (dict(size=2**64 * LOT), RejectReason.OUT_OF_RANGE),
        (dict(price=2**64 * TICK), RejectReason.OUT_OF_RANGE),
        (dict(price=10**40), RejectReason.OUT_OF_RANGE),
        (dict(oid=2**64), RejectReason.OUT_OF_RANGE),
        (dict(oid=0), RejectReason.OUT_OF_RANGE),
        (dict(expiry=-1), RejectReason.OUT_OF_RANGE),
        (dict(cid=2**64), RejectReason.OUT_OF_RANGE),
        (dict(sub=2**32), RejectReason.OUT_OF_RANGE),
        (dict(size=10.0), RejectReason.BAD_TYPE),
        (dict(price=True), RejectReason.BAD_TYPE),
        (dict(is_buy=1), RejectReason.BAD_TYPE),
        (dict(cid="x"), RejectReason.BAD_TYPE),
        (dict(tif=9), RejectReason.BAD_ENUM),
        (dict(stp=7), RejectReason.BAD_ENUM),
    ],
)
def test_bad_input_rejected_without_state_change(change: dict[str, Any],
                                                 reason: RejectReason) -> None:
    b = book_with_asks()
    before = b.state_hash()
    # the Order constructor is the type boundary: it records bad types for place to refuse
    args: dict[str, Any] = dict(oid=10, owner="t", sub=0, is_buy=True, price=1000, size=10)
    args.update(change)
    o = Order(**args)
    assert b.place(o, 0) == [Rejected(args["oid"], reason)]
    assert b.state_hash() == before


def test_duplicate_ids_rejected() -> None:
    b = mk()
    b.place(od(5, "a", True, 900, 10, cid=77), 0)
    before = b.state_hash()
    assert b.place(od(5, "b", True, 900, 10), 0) == [Rejected(5, RejectReason.DUPLICATE_ORDER_ID)]
    assert b.place(od(4, "b", True, 900, 10), 0) == [Rejected(4, RejectReason.DUPLICATE_ORDER_ID)]
    assert b.place(od(6, "a", False, 1900, 10, cid=77), 0) == [
        Rejected(6, RejectReason.DUPLICATE_CLIENT_ID)]
    assert b.state_hash() == before
    # the same client id is fine for another sub-account, or once the first order has ended
    assert b.place(od(6, "b", False, 1900, 10, cid=77), 0)[0] == Accepted(6, 10)
    b.cancel(5)
    assert b.place(od(7, "a", False, 1900, 10, cid=77), 0)[0] == Accepted(7, 10)


def test_bad_modify_and_cancel_change_nothing() -> None:
    b = book_with_asks()
    before = b.state_hash()
    assert b.cancel(99) == [CommandRejected(99, RejectReason.UNKNOWN_ORDER)]
    assert b.cancel_by_client_id("m1", 0, 5) == [CommandRejected(0, RejectReason.UNKNOWN_ORDER)]
    assert b.modify(99, 1000, 10, 0) == [CommandRejected(99, RejectReason.UNKNOWN_ORDER)]
    assert b.modify(1, 1050, 10, 0) == [CommandRejected(1, RejectReason.OFF_TICK)]
    assert b.modify(1, 1000, 5, 0) == [CommandRejected(1, RejectReason.OFF_LOT)]
    assert b.modify(1, 1000, 0, 0) == [CommandRejected(1, RejectReason.BAD_SIZE)]
    assert b.modify(1, 2**64 * TICK, 10, 0) == [CommandRejected(1, RejectReason.OUT_OF_RANGE)]
    assert b.cancel_all("nobody", 0) == []
    assert b.state_hash() == before


def test_bad_market_parameters() -> None:
    with pytest.raises(ValueError):
        OrderBook(0, 0, 1)
    with pytest.raises(ValueError):
        OrderBook(0, 1, -1)


# ---------------------------------------------------------------- order types


def test_gtc_price_time_priority_and_rest() -> None:
    b = book_with_asks()
    ev = b.place(od(10, "t", True, 1100, 50), 0)
    assert ev[0] == Accepted(10, 50)
    assert fills(ev) == [(1, 1000, 10), (2, 1000, 20), (3, 1100, 20)]
    assert ev[1] == Fill(1, 10, 1, 1000, 10, 40, 0, True)
    assert b.get(3) is not None and b.get(3).size == 10  # type: ignore[union-attr]
    assert b.best_ask() == 1100 and b.best_bid() is None
    ev = b.place(od(11, "t", True, 1200, 30), 0)
    assert fills(ev) == [(3, 1100, 10)]
    assert b.best_bid() == 1200 and b.best_ask() is None
    assert b.depth() == ([(1200, 20)], [])
    assert b.open_size("t", 0) == (20, 0)


def test_gtc_no_cross_rests_at_back_of_level() -> None:
    b = mk()
    for i, owner in enumerate(("a", "b", "c"), start=1):
        b.place(od(i, owner, True, 900, 10 * i), 0)
    assert [o.oid for o in b.iter_side(True)] == [1, 2, 3]
    assert b.depth() == ([(900, 60)], [])
    ev = b.place(od(4, "d", False, 900, 30), 0)
    assert fills(ev) == [(1, 900, 10), (2, 900, 20)]


def test_ioc_remainder_cancelled() -> None:
    b = book_with_asks()
    ev = b.place(od(10, "t", True, 1000, 50, Tif.IOC), 0)
    assert fills(ev) == [(1, 1000, 10), (2, 1000, 20)]
    assert ev[-1] == Cancelled(10, CancelReason.IOC_REMAINDER, 20)
    assert b.get(10) is None and b.best_bid() is None
    ev = b.place(od(11, "t", True, 900, 10, Tif.IOC), 0)
    assert ev == [Accepted(11, 10), Cancelled(11, CancelReason.IOC_REMAINDER, 10)]


def test_market_order_protection_bound_need_not_be_on_tick() -> None:
    b = book_with_asks()
    ev = b.place(od(10, "t", True, 1099, 100, Tif.MARKET), 0)
    assert fills(ev) == [(1, 1000, 10), (2, 1000, 20)]  # stops at the bound
    assert ev[-1] == Cancelled(10, CancelReason.IOC_REMAINDER, 70)


def test_fok_fills_fully_or_changes_nothing() -> None:
    b = book_with_asks()

    def sides() -> tuple[list[object], list[object], int]:
        return ([o.key() for o in b.iter_side(True)], [o.key() for o in b.iter_side(False)],
                b._fill_seq)

    before = sides()
    assert b.place(od(10, "t", True, 1100, 70, Tif.FOK), 0) == [
        Accepted(10, 70), Cancelled(10, CancelReason.FOK, 70)]
    ev = b.place(od(11, "t", True, 1000, 40, Tif.FOK), 0)  # 30 within the limit
    assert ev[-1] == Cancelled(11, CancelReason.FOK, 40)
    assert sides() == before
    ev = b.place(od(12, "t", True, 1100, 60, Tif.FOK), 0)
    assert fills(ev) == [(1, 1000, 10), (2, 1000, 20), (3, 1100, 30)]
    assert len(b) == 0
    assert b.place(od(13, "t", True, 1100, 10, Tif.FOK), 0) == [  # nothing to cross
        Accepted(13, 10), Cancelled(13, CancelReason.FOK, 10)]


def test_fok_skips_expired_and_stp_expire_maker_but_not_expire_taker() -> None:
    b = mk()
    b.place(od(1, "x", False, 1000, 10, expiry=50), 0)
    b.place(od(2, "t", False, 1000, 10), 0)
    b.place(od(3, "y", False, 1000, 10), 0)
    hashed = b.state_hash()
    ev = b.place(od(4, "t", True, 1000, 20, Tif.FOK, stp=Stp.EXPIRE_MAKER), 100)
    assert ev[-1] == Cancelled(4, CancelReason.FOK, 20)
    ev = b.place(od(5, "t", True, 1000, 10, Tif.FOK), 100)  # expire-taker meets own order
    assert ev[-1] == Cancelled(5, CancelReason.FOK, 10)
    assert [o.oid for o in b.iter_side(False)] == [1, 2, 3] and b.state_hash() != hashed
    ev = b.place(od(6, "t", True, 1000, 10, Tif.FOK, stp=Stp.EXPIRE_MAKER), 100)
    assert ev[1:] == [
        Cancelled(1, CancelReason.EXPIRED, 10),
        Cancelled(2, CancelReason.STP, 10),
        Fill(1, 6, 3, 1000, 10, 0, 0, True),
    ]


def test_post_only() -> None:
    b = book_with_asks()
    before = b.state_hash()
    assert b.place(od(10, "t", True, 1000, 10, Tif.POST_ONLY), 0) == [
        Rejected(10, RejectReason.POST_ONLY_WOULD_CROSS)]
    assert b.state_hash() == before
    assert b.place(od(10, "t", True, 900, 10, Tif.POST_ONLY), 0) == [Accepted(10, 10)]
    assert b.best_bid() == 900
    # a post-only modify that would cross is refused and the order stays as it was
    before = b.state_hash()
    assert b.modify(10, 1000, 10, 0) == [
        CommandRejected(10, RejectReason.POST_ONLY_WOULD_CROSS)]
    assert b.state_hash() == before


def test_good_til_time() -> None:
    b = mk()
    assert b.place(od(1, "a", False, 1000, 10, expiry=100), 101) == [
        Rejected(1, RejectReason.EXPIRED)]
    b.place(od(1, "a", False, 1000, 10, expiry=100), 0)
    b.place(od(2, "b", False, 1100, 10, expiry=200), 0)
    b.place(od(3, "c", False, 1200, 10), 0)
    # expiry is inclusive, like the contract's block.timestamp > expiry
    assert fills(b.place(od(4, "t", True, 1000, 10, Tif.IOC), 100)) == [(1, 1000, 10)]
    b.place(od(5, "a", False, 1000, 10, expiry=100), 0)
    ev = b.place(od(6, "t", True, 1100, 10, Tif.IOC), 101)
    assert ev[1] == Cancelled(5, CancelReason.EXPIRED, 10)  # met, removed, never matched
    assert fills(ev) == [(2, 1100, 10)]
    b.place(od(7, "d", False, 1300, 10, expiry=150), 0)
    b.place(od(8, "e", False, 1400, 10, expiry=120), 0)
    assert b.expire(150) == [Cancelled(8, CancelReason.EXPIRED, 10)]
    assert b.expire(1000) == [Cancelled(7, CancelReason.EXPIRED, 10)]
    assert [o.oid for o in b.iter_side(False)] == [3]
    # modifying an expired order removes it
    b.place(od(9, "f", True, 900, 10, expiry=10), 0)
    assert b.modify(9, 800, 10, 11) == [Cancelled(9, CancelReason.EXPIRED, 10)]


def test_expiry_heap_stays_bounded() -> None:
    b = mk()
    for i in range(1, 5000):
        b.place(od(i, "a", True, 900, 10, expiry=10**6), 0)
        b.cancel(i)
    assert b._exp_entries <= 1024 + 2
    assert sum(map(len, b._exp_oids.values())) == b._exp_entries
    assert len(b._exp_heap) == len(b._exp_oids) == 1


def test_order_registered_after_its_expiry_bucket_was_swept_still_expires() -> None:
    # a sweep removed expiry 100's bucket; a caller whose clock is behind the sweep then
    # rests another order with that expiry: it goes into a new bucket, and the next sweep
    # removes it
    b = mk()
    b.place(od(1, "a", True, 900, 10, expiry=100), 0)
    assert b.expire(101) == [Cancelled(1, CancelReason.EXPIRED, 10)]
    assert b.place(od(2, "a", True, 900, 10, expiry=100), 99) == [Accepted(2, 10)]
    assert b.expire(101) == [Cancelled(2, CancelReason.EXPIRED, 10)]
    assert b.get(2) is None and not b._exp_oids


# ---------------------------------------------------------------- reduce-only


def test_reduce_only_taker_capped_or_cancelled() -> None:
    pos = {("t", 0): 0}
    b = mk(position_of=lambda owner, sub: pos.get((owner, sub), 0))
    b.place(od(1, "m", False, 1000, 100), 0)
    assert b.place(od(2, "t", True, 1000, 10, reduce_only=True), 0) == [
        Accepted(2, 10), Cancelled(2, CancelReason.REDUCE_ONLY, 10)]
    pos[("t", 0)] = 35  # long: a reduce-only buy would increase it
    assert b.place(od(3, "t", True, 1000, 10, reduce_only=True), 0)[-1] == Cancelled(
        3, CancelReason.REDUCE_ONLY, 10)
    pos[("t", 0)] = -35  # short 35: capped to 30 (whole lots)
    ev = b.place(od(4, "t", True, 1000, 100, reduce_only=True), 0)
    assert ev[0] == Accepted(4, 30) and fills(ev) == [(1, 1000, 30)]


def test_reduce_only_maker_rechecked_when_it_fills() -> None:
    pos = {("m", 0): 25}
    b = mk(position_of=lambda owner, sub: pos.get((owner, sub), 0))
    b.place(od(1, "m", False, 1000, 20, reduce_only=True), 0)
    b.place(od(2, "m", False, 1000, 20, reduce_only=True), 0)
    b.place(od(3, "z", False, 1000, 20), 0)
    ev = b.place(od(4, "t", True, 1000, 60), 0)
    # m may sell 20 more: order 1 fills 20, then order 2 only the 0 remaining lots... and the
    # position lookups see this command's earlier fills (25 - 20 = 5, rounded down to 0 lots)
    assert ev[1:] == [
        Fill(1, 4, 1, 1000, 20, 40, 0, True),
        Cancelled(2, CancelReason.REDUCE_ONLY, 20),
        Fill(2, 4, 3, 1000, 20, 20, 0, True),
    ]
    b.cancel(4)  # the taker's unfilled 20 rested; clear it
    pos[("m", 0)] = 35
    assert b.place(od(5, "m", False, 1000, 40, reduce_only=True), 0) == [Accepted(5, 30)]
    b.place(od(6, "u", False, 1000, 10), 0)
    pos[("m", 0)] = 15  # the position shrank meanwhile (say another market's liquidation)
    ev = b.place(od(7, "t2", True, 1000, 40), 0)
    assert ev[1:] == [
        Fill(3, 7, 5, 1000, 10, 30, 20, True),
        Cancelled(5, CancelReason.REDUCE_ONLY, 20),
        Fill(4, 7, 6, 1000, 10, 20, 0, True),
    ]


def test_reduce_only_modify_capped() -> None:
    pos = {("m", 0): 30}
    b = mk(position_of=lambda owner, sub: pos.get((owner, sub), 0))
    b.place(od(1, "m", False, 1000, 20, reduce_only=True), 0)
    assert b.modify(1, 1000, 50, 0) == [Modified(1, 1000, 30, False)]
    pos[("m", 0)] = 0
    assert b.modify(1, 1100, 10, 0) == [Cancelled(1, CancelReason.REDUCE_ONLY, 30)]


# ---------------------------------------------------------------- STP and risk veto


@pytest.mark.parametrize(
    "mode, expected, rests",
    [
        (Stp.EXPIRE_TAKER, [Cancelled(10, CancelReason.STP, 20)], [1, 2, 3]),
        (Stp.EXPIRE_MAKER, [Cancelled(2, CancelReason.STP, 20),
                            Fill(2, 10, 3, 1100, 20, 0, 10, True)], [1, 3]),
        (Stp.EXPIRE_BOTH, [Cancelled(2, CancelReason.STP, 20),
                           Cancelled(10, CancelReason.STP, 20)], [1, 3]),
    ],
)
def test_self_trade_prevention(mode: Stp, expected: list[Any], rests: list[int]) -> None:
    b = book_with_asks()
    first = b.place(od(9, "x", True, 1000, 10), 0)  # takes order 1
    assert fills(first) == [(1, 1000, 10)]
    # owner m2 (any sub-account) meets its own order 2 next
    ev = b.place(Order(10, "m2", 1, True, 1100, 20, stp=mode), 0)
    assert ev[1:] == expected
    assert [o.oid for o in b.iter_side(False)] == [o for o in rests if o != 1]


def test_maker_veto_cancels_with_risk_and_continues() -> None:
    seen: list[tuple[int, int, int]] = []

    def check(m: Order, size: int, price: int) -> bool:
        seen.append((m.oid, size, price))
        return m.oid != 2

    b = OrderBook(3, TICK, LOT, maker_check=check)
    b.place(od(1, "m1", False, 1000, 10), 0)
    b.place(od(2, "m2", False, 1000, 20), 0)
    b.place(od(3, "m3", False, 1100, 30), 0)
    ev = b.place(od(10, "t", True, 1100, 30), 0)
    assert ev[1:] == [
        Fill(1, 10, 1, 1000, 10, 20, 0, True),
        Cancelled(2, CancelReason.RISK, 20),
        Fill(2, 10, 3, 1100, 20, 0, 10, True),
    ]
    assert seen == [(1, 10, 1000), (2, 20, 1000), (3, 20, 1100)]
    # FOK asks the hook once per maker, in the plan, and execution reuses the verdicts
    seen.clear()
    b.place(od(11, "m2", False, 1100, 20), 0)
    ev = b.place(od(12, "t", True, 1100, 30, Tif.FOK), 0)
    assert fills(ev) == [(3, 1100, 10), (11, 1100, 20)] and len(seen) == 2


# ---------------------------------------------------------------- cancel and modify


def test_cancel_paths_and_open_size() -> None:
    b = mk()
    b.place(od(1, "a", True, 900, 10, cid=1), 0)
    b.place(od(2, "a", True, 800, 20, cid=2), 0)
    b.place(od(3, "a", False, 1900, 30), 0)
    b.place(Order(4, "a", 1, False, 1900, 40), 0)
    assert b.open_size("a", 0) == (30, 30) and b.open_size("a", 1) == (0, 40)
    assert b.order_id_of("a", 0, 2) == 2
    assert b.cancel(1) == [Cancelled(1, CancelReason.USER, 10)]
    assert b.cancel(1) == [CommandRejected(1, RejectReason.UNKNOWN_ORDER)]
    assert b.cancel_by_client_id("a", 0, 2, CancelReason.LIQUIDATION) == [
        Cancelled(2, CancelReason.LIQUIDATION, 20)]
    assert b.open_size("a", 0) == (0, 30)
    b.place(od(5, "a", True, 700, 10), 0)
    assert b.cancel_all("a", 0, is_buy=False) == [Cancelled(3, CancelReason.MASS_CANCEL, 30)]
    assert b.cancel_all("a", 0, CancelReason.DEAD_MAN) == [Cancelled(5, CancelReason.DEAD_MAN, 10)]
    assert [o.oid for o in b.open_orders("a", 1)] == [4]
    assert b.open_size("a", 0) == (0, 0) and len(b) == 1


def test_modify_priority_rules() -> None:
    b = mk()
    for i in (1, 2, 3):
        b.place(od(i, f"o{i}", True, 900, 30), 0)
    assert b.modify(1, 900, 20, 0) == [Modified(1, 900, 20, True)]  # smaller: keeps place
    assert [o.oid for o in b.iter_side(True)] == [1, 2, 3]
    assert b.modify(1, 900, 30, 0) == [Modified(1, 900, 30, False)]  # larger: back of queue
    assert [o.oid for o in b.iter_side(True)] == [2, 3, 1]
    assert b.modify(2, 800, 30, 0) == [Modified(2, 800, 30, False)]
    assert b.modify(2, 900, 30, 0) == [Modified(2, 900, 30, False)]
    assert [o.oid for o in b.iter_side(True)] == [3, 1, 2]
    assert b.depth() == ([(900, 90)], [])
    assert b.open_size("o1", 0) == (30, 0)


def test_modify_that_crosses_trades_then_rests() -> None:
    b = book_with_asks()
    b.place(od(10, "t", True, 900, 40, cid=9), 0)
    ev = b.modify(10, 1000, 50, 0)
    assert ev == [Modified(10, 1000, 50, False), Fill(1, 10, 1, 1000, 10, 40, 0, True),
                  Fill(2, 10, 2, 1000, 20, 20, 0, True)]
    assert b.best_bid() == 1000 and b.open_size("t", 0) == (20, 0)
    assert b.order_id_of("t", 0, 9) == 10
    ev = b.modify(10, 1100, 20, 0)
    assert fills(ev) == [(3, 1100, 20)] and b.get(10) is None
    assert b.open_size("t", 0) == (0, 0) and b.order_id_of("t", 0, 9) is None


def test_state_hash_is_deterministic_and_sees_queue_order() -> None:
    def build(order: list[int]) -> OrderBook:
        b = mk()
        for i, who in enumerate(order, start=1):
            b.place(od(i, f"o{who}", True, 900, 10), 0)
        return b

    assert build([1, 2]).state_hash() == build([1, 2]).state_hash()
    assert build([1, 2]).state_hash() != build([2, 1]).state_hash()


def test_empty_levels_are_reused_and_purged() -> None:
    b = mk()
    for i in range(1, 3000):
        b.place(od(i, "a", True, 100 * i, 10), 0)
        b.cancel(i)
    assert len(b._levels[0]) <= 1024 + 2
    assert b.best_bid() is None and b.depth() == ([], [])
    b.place(od(5000, "a", True, 500, 10), 0)
    b.place(od(5001, "a", True, 400, 10), 0)
    assert b.depth(1) == ([(500, 10)], [])


def test_huge_but_valid_numbers() -> None:
    b = OrderBook(0, 1, 1)
    big = U64
    assert b.place(Order(1, "a", 0, False, big, big), 0) == [Accepted(1, big)]
    ev = b.place(Order(2, "b", 0, True, big, big), 0)
    assert fills(ev) == [(1, big, big)]
    assert b.place(Order(big, "b", 0, True, 1, 1), 0) == [Accepted(big, 1)]
