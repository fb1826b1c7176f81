"""Engine: matching + sequencing + shadow ledger + risk, through the public command API."""

from __future__ import annotations

from crossbook.config import PRICE, SIZE, USD
from crossbook.margin import SubAccount, apply_fill_side
from crossbook.protocol_types import FillItem, FundingItem, Withdrawal, WithdrawItem
from matcher.commands import (
    AgentSet,
    Bust,
    CancelAll,
    CancelOrder,
    ChainBatchSettled,
    ChainDeposit,
    Code,
    ModifyOrder,
    OrderStatus,
    PlaceOrder,
    PostFunding,
    RequestWithdrawal,
    Result,
    Sequenced,
)
from matcher.engine import Engine, EngineConfig
from matcher.ledger import _canon_acct
from matcher.orders import CancelReason, Tif
from engine_helpers import (
    A,
    B,
    C,
    ETH,
    ETH_PX,
    LOT,
    NOW,
    SIG,
    fills,
    funded,
    order,
    place,
    prices_cmd,
    random_commands,
    req,
    updates,
)


def seqd(res: Result) -> list[Sequenced]:
    return [o for o in res.outputs if isinstance(o, Sequenced)]


def canon(eng: Engine, owner: str, confirmed: bool = False) -> object:
    st = eng.confirmed_account(owner, 0) if confirmed else eng.account(owner, 0)
    return _canon_acct((owner, 0), st)


ONE = SIZE  # one ETH


# ------------------------------------------------------------------ matching and sequencing


def test_match_sequences_fill_with_both_signed_orders() -> None:
    eng = funded()
    r1 = place(eng, B, False, ETH_PX, 2 * ONE, nonce=1)
    assert r1.ack.ok and r1.ack.order_id == 1 and r1.ack.seq > 0
    r2 = place(eng, A, True, ETH_PX, ONE, nonce=7)
    assert r2.ack.ok and r2.ack.order_id == 2
    [f] = fills(r2)
    [s] = seqd(r2)
    assert s.seq == f.seq == 1
    assert isinstance(s.item, FillItem)
    assert s.item.taker == order(A, True, ETH_PX, ONE, 7)
    assert s.item.maker == order(B, False, ETH_PX, 2 * ONE, 1)
    assert (s.item.size, s.item.price) == (ONE, ETH_PX)
    assert (s.item.taker_fee_ppm, s.item.maker_fee_ppm) == (500, 200)
    # projected positions and fees (cash 3000 USD, taker 0.05%, maker 0.02%)
    a, b = eng.account(A, 0), eng.account(B, 0)
    assert a.positions[ETH].size == ONE and b.positions[ETH].size == -ONE
    assert a.quote == 1_000_000 * USD - 3000 * USD - 1_500_000
    assert b.quote == 1_000_000 * USD + 3000 * USD - 600_000
    # confirmed state is untouched until the chain settles
    assert eng.confirmed_account(A, 0).positions == {}
    st = {u.order_id: u.status for u in updates(r2)}
    assert st == {1: OrderStatus.PARTIALLY_FILLED, 2: OrderStatus.FILLED}
    assert eng.items_from(1) == [(1, s.item)]


def test_sequence_is_gap_free_and_replayable() -> None:
    eng = Engine()
    seen: list[int] = []
    results = [eng.apply(c) for c in random_commands(seed=3, n=600)]
    for res in results:
        seen += [s.seq for s in seqd(res)]
    assert seen == list(range(1, len(seen) + 1))
    assert len(seen) > 50
    led = eng.ledger
    assert [s for s, _ in eng.items_from(0)] == list(range(led.settled_seq + 1, led.next_seq))


def test_exactly_one_ack_and_rejections_change_nothing() -> None:
    eng = Engine()
    cmd_seq = 0
    n_rej = 0
    for c in random_commands(seed=5, n=300):
        before = eng.state_hash()
        res = eng.apply(c)
        assert res.ack.req_id == c.req_id
        if res.journal:
            cmd_seq += 1
            assert res.ack.seq == cmd_seq
        else:
            assert res.ack.seq == 0
            assert eng.state_hash() == before
        if not res.ack.ok:
            n_rej += 1
    assert n_rej > 5  # the stream does exercise rejections


def test_determinism_same_stream_same_hash() -> None:
    cmds = random_commands(seed=11, n=800)
    e1, e2 = Engine(), Engine()
    out1 = [e1.apply(c) for c in cmds]
    out2 = [e2.apply(c) for c in cmds]
    assert e1.state_hash() == e2.state_hash()
    assert [r.outputs for r in out1] == [r.outputs for r in out2]
    assert e1.state_hash() != Engine().state_hash()


def test_exposure_matches_live_orders() -> None:
    eng = Engine()
    for c in random_commands(seed=8, n=500):
        eng.apply(c)
    expect: dict[tuple[str, int], dict[int, list[int]]] = {}
    for r in eng.orders.values():
        x = expect.setdefault(r.acct, {}).setdefault(r.market, [0, 0, 0, 0])
        k = 0 if r.is_buy else 2
        x[k] += r.remaining
        x[k + 1] += r.remaining * r.price
        assert r.remaining == r.bo.size
        assert r.notional == r.remaining * r.price
    # the lists' first four slots are the exposure (the rest caches leg costs)
    got = {a: {m: v[:4] for m, v in x.items() if any(v[:4])} for a, x in eng.exposure.items()}
    assert {a: x for a, x in got.items() if x} == expect


# ------------------------------------------------------------------ pre-trade risk


def test_worst_case_per_side_refuses_over_margin() -> None:
    eng = funded(usd=10_000, owners=(A,))
    # 60 ETH at 3000 = 180k notional: req 9000 + fee 90 < 10000
    # (limits at the mark: a bid below it would count a haircut gain in the scenario)
    assert place(eng, A, True, ETH_PX, 60 * ONE, nonce=1).ack.ok
    # another 10 ETH buy: the worst case counts both buys -> 210k notional, refused
    r = place(eng, A, True, ETH_PX, 10 * ONE, nonce=2)
    assert r.ack.code == Code.INSUFFICIENT_MARGIN and not r.journal
    # the sell side is its own scenario: 60 ETH of sells fits
    assert place(eng, A, False, ETH_PX + 100 * PRICE, 60 * ONE, nonce=3).ack.ok
    # cancelling the first buy frees its margin
    assert eng.apply(CancelOrder(req(), A, 1, 0, ETH, None, NOW)).ack.ok
    assert place(eng, A, True, ETH_PX, 10 * ONE, nonce=4).ack.ok


def test_buy_above_mark_counts_the_immediate_loss() -> None:
    eng = funded(usd=10_000, owners=(A,))
    # at 3000 this fits (see above); at a 3100 limit the 6000 USD loss at the oracle does not
    r = place(eng, A, True, 3100 * PRICE, 60 * ONE, nonce=1)
    assert r.ack.code == Code.INSUFFICIENT_MARGIN


def test_risk_reducing_orders_accepted_when_unhealthy() -> None:
    eng = funded(usd=10_000, owners=(A, B))
    assert place(eng, B, False, ETH_PX, 60 * ONE, nonce=1).ack.ok
    assert fills(place(eng, A, True, ETH_PX, 60 * ONE, nonce=2))
    eng.apply(prices_cmd(eth=2900 * PRICE))
    assert eng.risk.health(eng.account(A, 0), eng.ledger.proj_funding) < 0
    assert place(eng, A, True, 2800 * PRICE, ONE, nonce=3).ack.code == Code.INSUFFICIENT_MARGIN
    assert place(eng, A, False, 2950 * PRICE, 10 * ONE, nonce=4).ack.ok
    # a flip is not a reduction
    r = place(eng, A, False, 2900 * PRICE, 200 * ONE, nonce=5)
    assert r.ack.code == Code.INSUFFICIENT_MARGIN


def test_missing_oracle_price_refuses() -> None:
    eng = Engine()
    eng.apply(ChainDeposit(req(), A, 0, 0, 10_000 * USD))
    assert place(eng, A, True, ETH_PX, ONE, nonce=1).ack.code == Code.ORACLE_UNAVAILABLE


def test_maker_recheck_cancels_unhealthy_maker() -> None:
    eng = funded(usd=10_000, owners=(A, B))
    assert place(eng, A, True, ETH_PX, 60 * ONE, nonce=1).ack.ok
    eng.apply(prices_cmd(eth=2950 * PRICE))
    r = place(eng, B, False, ETH_PX, 60 * ONE, nonce=2, tif=Tif.IOC)
    assert r.ack.ok and not fills(r)
    st = {(u.order_id, u.status, u.reason) for u in updates(r)}
    assert (1, OrderStatus.CANCELLED, CancelReason.RISK) in st
    assert (2, OrderStatus.CANCELLED, CancelReason.IOC_REMAINDER) in st
    assert eng.ledger.next_seq == 1 and not eng.orders


def test_maker_recheck_sees_earlier_fills_of_same_command() -> None:
    eng = funded(usd=10_000, owners=(A, B))
    # two 30 ETH bids of A fit together at the 3000 mark; at 2950 the first fill still passes
    # the re-check but the second, checked on top of the first, does not
    assert place(eng, A, True, ETH_PX, 30 * ONE, nonce=1).ack.ok
    assert place(eng, A, True, ETH_PX, 30 * ONE, nonce=2).ack.ok
    eng.apply(prices_cmd(eth=2950 * PRICE))
    r = place(eng, B, False, ETH_PX, 60 * ONE, nonce=3, tif=Tif.IOC)
    fs = fills(r)
    assert len(fs) == 1 and fs[0].maker_order_id == 1
    assert any(u.order_id == 2 and u.reason == CancelReason.RISK for u in updates(r))
    assert eng.risk.health(eng.account(A, 0), eng.ledger.proj_funding) >= 0


def test_settlement_lag_bound() -> None:
    eng = funded(EngineConfig(max_unsettled_per_account=2), owners=(A, B, C))
    for n in (1, 2):
        place(eng, B, False, ETH_PX, ONE, nonce=10 + n)
        assert fills(place(eng, A, True, ETH_PX, ONE, nonce=n))
    r = place(eng, A, True, ETH_PX - PRICE, ONE, nonce=3)
    assert r.ack.code == Code.SETTLEMENT_LAG
    # risk-reducing (A is long 2) and cancels still go through
    assert place(eng, A, False, ETH_PX + PRICE, ONE, nonce=4).ack.ok
    assert eng.apply(CancelAll(req(), A, 0, None, NOW)).ack.ok
    # a withdrawal is risk-increasing too
    w = Withdrawal(A, 0, 0, USD, 1, NOW + 60)
    assert eng.apply(RequestWithdrawal(req(), w, SIG, b"w" * 32, NOW)).ack.code \
        == Code.SETTLEMENT_LAG
    assert eng.apply(ChainBatchSettled(req(), 1, 2, [])).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=5).ack.ok


def test_global_settlement_lag_bound() -> None:
    eng = funded(EngineConfig(max_unsettled_global=1), owners=(A, B, C))
    place(eng, B, False, ETH_PX, ONE, nonce=1)
    assert fills(place(eng, A, True, ETH_PX, ONE, nonce=2))
    assert place(eng, C, True, ETH_PX - PRICE, ONE, nonce=3).ack.code == Code.SETTLEMENT_LAG


# ------------------------------------------------------------------ settlement and busts


def test_settled_batch_advances_confirmed_to_projected() -> None:
    eng = funded()
    for c in random_commands(seed=2, n=0):  # nothing
        eng.apply(c)
    place(eng, B, False, ETH_PX, 5 * ONE, nonce=1)
    place(eng, A, True, ETH_PX, 2 * ONE, nonce=2)
    eng.apply(PostFunding(req(), ETH, 300, NOW))
    place(eng, C, True, ETH_PX, 3 * ONE, nonce=3)
    n = eng.ledger.next_seq - 1
    assert n == 3
    assert eng.apply(ChainBatchSettled(req(), 1, n, [])).ack.ok
    for w in (A, B, C):
        assert canon(eng, w, confirmed=True) == canon(eng, w)
    assert eng.ledger.conf_funding == eng.ledger.proj_funding
    assert eng.items_from(1) == []
    # a duplicate notification is a no-op, a gap is refused
    assert not eng.apply(ChainBatchSettled(req(), 1, n, [])).journal
    assert eng.apply(ChainBatchSettled(req(), 9, 1, [])).ack.code == Code.STALE_SETTLEMENT


def test_bust_restores_exact_previous_projected_state() -> None:
    eng = funded()
    before = {w: canon(eng, w) for w in (A, B)}
    place(eng, B, False, ETH_PX, ONE, nonce=1)
    assert fills(place(eng, A, True, ETH_PX, ONE, nonce=2))
    assert canon(eng, A) != before[A]
    r = eng.apply(ChainBatchSettled(req(), 1, 1, [(1, 7)]))
    assert r.ack.ok
    assert r.outputs == [Bust(1, 7, (A, 0), (B, 0))]
    assert {w: canon(eng, w) for w in (A, B)} == before
    assert eng.ledger.pending == {}


def test_bust_in_middle_keeps_later_unsettled_fills() -> None:
    eng = funded()
    place(eng, B, False, ETH_PX, 10 * ONE, nonce=1)
    f1 = fills(place(eng, A, True, ETH_PX, ONE, nonce=2))[0]
    f2 = fills(place(eng, C, True, ETH_PX, 2 * ONE, nonce=3))[0]
    f3 = fills(place(eng, A, True, ETH_PX, 3 * ONE, nonce=4))[0]
    assert (f1.seq, f2.seq, f3.seq) == (1, 2, 3)
    # the chain applied fill 2 and rejected fill 1; fill 3 is still in flight
    r = eng.apply(ChainBatchSettled(req(), 1, 2, [(1, 7)]))
    assert [type(o) for o in r.outputs] == [Bust]
    # expected projected state of A: deposit + fill 3 only; of B: deposit + fills 2 and 3
    exp_a = SubAccount(1_000_000 * USD)
    cash3 = 3 * 3000 * USD
    apply_fill_side(exp_a, ETH, 3 * ONE, cash3, f3.taker_fee, 0)
    assert _canon_acct((A, 0), eng.account(A, 0)) == _canon_acct((A, 0), exp_a)
    exp_b = SubAccount(1_000_000 * USD)
    apply_fill_side(exp_b, ETH, -2 * ONE, -2 * 3000 * USD, f2.maker_fee, 0)
    apply_fill_side(exp_b, ETH, -3 * ONE, -cash3, f3.maker_fee, 0)
    assert _canon_acct((B, 0), eng.account(B, 0)) == _canon_acct((B, 0), exp_b)
    # confirmed holds fill 2 only
    conf_b = SubAccount(1_000_000 * USD)
    apply_fill_side(conf_b, ETH, -2 * ONE, -2 * 3000 * USD, f2.maker_fee, 0)
    assert _canon_acct((B, 0), eng.confirmed_account(B, 0)) == _canon_acct((B, 0), conf_b)
    assert [s for s, _ in eng.items_from(1)] == [3]


def test_rejected_funding_item_rebuilds_indices() -> None:
    eng = funded()
    place(eng, B, False, ETH_PX, ONE, nonce=1)
    place(eng, A, True, ETH_PX, ONE, nonce=2)
    before = (canon(eng, A), canon(eng, B))
    r = eng.apply(PostFunding(req(), ETH, 100, NOW))
    assert isinstance(seqd(r)[0].item, FundingItem)
    assert eng.ledger.proj_funding[ETH] == 100 * ETH_PX // 1_000_000
    eng.apply(ChainBatchSettled(req(), 1, 2, [(2, 9)]))
    assert eng.ledger.proj_funding[ETH] == 0
    assert (canon(eng, A), canon(eng, B)) == before


# ------------------------------------------------------------------ orders API


def test_replayed_nonce_and_fee_cap() -> None:
    eng = funded()
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=5).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=5).ack.code == Code.REPLAYED_NONCE
    # nonces are owner-wide, across sub-accounts
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=5, sub=1).ack.code \
        == Code.REPLAYED_NONCE
    assert place(eng, B, True, ETH_PX - PRICE, ONE, nonce=5).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=6, max_fee=499).ack.code \
        == Code.FEE_TOO_HIGH
    # a post-only order only ever pays the maker fee
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=7, max_fee=200,
                 tif=Tif.POST_ONLY).ack.ok


def test_validation_codes() -> None:
    eng = funded()
    assert place(eng, A, True, ETH_PX + 1, ONE, nonce=1).ack.code == Code.OFF_TICK
    assert place(eng, A, True, ETH_PX, ONE + 1, nonce=2).ack.code == Code.OFF_LOT
    assert place(eng, A, True, ETH_PX, ONE, nonce=3, market=9).ack.code == Code.UNKNOWN_MARKET
    assert place(eng, A, True, ETH_PX, ONE, nonce=4, expiry=NOW - 1).ack.code == Code.EXPIRED
    place(eng, B, False, ETH_PX, ONE, nonce=5)
    assert place(eng, A, True, ETH_PX, ONE, nonce=6, tif=Tif.POST_ONLY).ack.code \
        == Code.POST_ONLY_WOULD_CROSS
    r = eng.apply(PlaceOrder(req(), order(A, True, ETH_PX, ONE, 7), SIG, C, 0, None, 0, NOW))
    assert r.ack.code == Code.NOT_AUTHORISED
    eng.apply(AgentSet(req(), A, C, True))
    r = eng.apply(PlaceOrder(req(), order(A, True, ETH_PX - PRICE, ONE, 7), SIG, C, 0, None, 0,
                             NOW))
    assert r.ack.ok


def test_too_many_open_orders() -> None:
    eng = funded(EngineConfig(max_open_orders_per_account=2))
    assert place(eng, A, True, ETH_PX - PRICE, LOT, nonce=1).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, LOT, nonce=2).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, LOT, nonce=3).ack.code \
        == Code.TOO_MANY_OPEN_ORDERS


def test_cancel_by_client_id_and_authorisation() -> None:
    eng = funded()
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=1, cid=42).ack.ok
    assert place(eng, A, True, ETH_PX - PRICE, ONE, nonce=2, cid=42).ack.code \
        == Code.DUPLICATE_CLIENT_ID
    assert eng.apply(CancelOrder(req(), B, 1, 0, ETH, None, NOW)).ack.code == Code.NOT_AUTHORISED
    assert eng.apply(CancelOrder(req(), A, None, 0, ETH, 43, NOW)).ack.code \
        == Code.UNKNOWN_ORDER
    r = eng.apply(CancelOrder(req(), A, None, 0, ETH, 42, NOW))
    assert r.ack.ok and updates(r)[0].status == OrderStatus.CANCELLED
    assert eng.open_exposure(A, 0)[ETH] == [0, 0, 0, 0]


def test_modify_size_decrease_keeps_signed_order_and_priority() -> None:
    eng = funded()
    place(eng, B, False, ETH_PX, 5 * ONE, nonce=1)
    place(eng, C, False, ETH_PX, 5 * ONE, nonce=2)
    r = eng.apply(ModifyOrder(req(), B, 1, 2 * ONE, None, None, None, NOW))
    assert r.ack.ok and r.ack.order_id == 1
    assert eng.apply(ModifyOrder(req(), B, 1, 3 * ONE, None, None, None, NOW)).ack.code \
        == Code.BAD_SIZE
    f = fills(place(eng, A, True, ETH_PX, 3 * ONE, nonce=3))
    assert [(x.maker_order_id, x.size) for x in f] == [(1, 2 * ONE), (2, ONE)]
    [item] = [s.item for s in seqd(place(eng, A, True, ETH_PX, ONE, nonce=4))]
    assert isinstance(item, FillItem) and item.maker.nonce == 2
    assert eng.items_from(1)[0][1].maker == order(B, False, ETH_PX, 5 * ONE, 1)  # type: ignore[union-attr]


def test_cancel_replace_with_new_signed_order() -> None:
    eng = funded()
    place(eng, B, False, ETH_PX + 10 * PRICE, 5 * ONE, nonce=1)
    new = order(B, False, ETH_PX, 4 * ONE, 2)
    r = eng.apply(ModifyOrder(req(), B, 1, 4 * ONE, new, SIG, B, NOW))
    assert r.ack.ok and r.ack.order_id == 2
    assert [(u.order_id, u.status) for u in updates(r)] == [
        (1, OrderStatus.CANCELLED), (2, OrderStatus.OPEN)]
    f = fills(place(eng, A, True, ETH_PX, ONE, nonce=3))
    assert f[0].maker_order_id == 2
    # replacing on a used nonce other than the order's own is refused
    bad = order(B, False, ETH_PX, ONE, 1)
    assert eng.apply(ModifyOrder(req(), B, 2, ONE, bad, SIG, B, NOW)).ack.code \
        == Code.REPLAYED_NONCE
    # same nonce: the open size is what is left of the signed budget (4 signed, 1 filled -> 2)
    same = order(B, False, ETH_PX + PRICE, 3 * ONE, 2)
    r = eng.apply(ModifyOrder(req(), B, 2, 3 * ONE, same, SIG, B, NOW))
    assert r.ack.ok and eng.orders[r.ack.order_id].remaining == 2 * ONE


def test_replacement_the_book_refuses_leaves_a_plain_cancel() -> None:
    """The engine cancels the replaced order before the book sees the replacement; when the
    book refuses it (an expiry past uint64), the command is journaled as that cancel, with
    the order's exposure and open count released exactly as a CancelOrder releases them."""
    moved, cancelled = funded(), funded()
    for eng in (moved, cancelled):
        place(eng, B, False, ETH_PX + 10 * PRICE, 5 * ONE, nonce=1)
        place(eng, B, False, ETH_PX + 11 * PRICE, 2 * ONE, nonce=2)
    new = order(B, False, ETH_PX + 12 * PRICE, 5 * ONE, 3, expiry=2**64 + 5)
    r = moved.apply(ModifyOrder(req(), B, 1, 5 * ONE, new, SIG, B, NOW))
    assert not r.ack.ok and r.ack.code == Code.BAD_REQUEST and r.journal
    assert [(u.order_id, u.status) for u in updates(r)] == [(1, OrderStatus.CANCELLED)]
    assert cancelled.apply(CancelOrder(req(), B, 1, 0, ETH, None, NOW)).ack.ok
    assert moved.open_count == cancelled.open_count == {(B.lower(), 0): 1}
    assert moved.open_exposure(B, 0) == cancelled.open_exposure(B, 0)
    assert moved.state_hash() == cancelled.state_hash()


def test_withdrawal_rules() -> None:
    eng = funded(usd=10_000, owners=(A, B))
    w = Withdrawal(A, 0, 0, 20_000 * USD, 1, NOW + 60)
    assert eng.apply(RequestWithdrawal(req(), w, SIG, b"1" * 32, NOW)).ack.code \
        == Code.INSUFFICIENT_BALANCE
    # A goes short (a long would push its quote negative: nothing to withdraw at all)
    place(eng, B, True, ETH_PX, 60 * ONE, nonce=1)
    assert fills(place(eng, A, False, ETH_PX, 60 * ONE, nonce=2))
    w = Withdrawal(A, 0, 0, 5_000 * USD, 2, NOW + 60)
    assert eng.apply(RequestWithdrawal(req(), w, SIG, b"2" * 32, NOW)).ack.code \
        == Code.INSUFFICIENT_MARGIN
    w = Withdrawal(A, 0, 0, 500 * USD, 3, NOW + 60)
    r = eng.apply(RequestWithdrawal(req(), w, SIG, b"3" * 32, NOW))
    assert r.ack.ok and seqd(r)[0] == Sequenced(2, WithdrawItem(w, SIG))
    assert eng.apply(RequestWithdrawal(req(), w, SIG, b"3" * 32, NOW)).ack.code == Code.REPLAYED
    w = Withdrawal(A, 0, 0, USD, 4, NOW - 1)
    assert eng.apply(RequestWithdrawal(req(), w, SIG, b"4" * 32, NOW)).ack.code == Code.EXPIRED


def test_reduce_only_capped_by_projected_position() -> None:
    eng = funded()
    place(eng, B, False, ETH_PX, 2 * ONE, nonce=1)
    place(eng, A, True, ETH_PX, 2 * ONE, nonce=2)
    r = place(eng, A, False, ETH_PX + PRICE, 5 * ONE, nonce=3, reduce_only=True)
    assert r.ack.ok and eng.orders[r.ack.order_id].remaining == 2 * ONE
    # nothing to reduce on the buy side: accepted then cancelled REDUCE_ONLY
    r = place(eng, A, True, ETH_PX - PRICE, ONE, nonce=4, reduce_only=True)
    assert updates(r)[-1].reason == CancelReason.REDUCE_ONLY


def test_snapshot_restore_same_hash() -> None:
    eng = Engine()
    for c in random_commands(seed=21, n=700):
        eng.apply(c)
    assert eng.orders  # something rests
    clone = Engine.restore(eng.snapshot())
    assert clone.state_hash() == eng.state_hash()
    # and both continue identically
    more = random_commands(seed=22, n=200)
    assert [eng.apply(c).outputs for c in more] == [clone.apply(c).outputs for c in more]
    assert clone.state_hash() == eng.state_hash()


# ------------------------------------------------------------------ intake (real signatures)


def test_intake_verifies_signer_and_agents() -> None:
    from crossbook.eip712 import Domain, Signer
    from matcher.commands import Ack
    from matcher.intake import Intake

    dom = Domain(31337, "0x" + "cb" * 20)
    owner, agent = Signer(b"\x01" * 32), Signer(b"\x02" * 32)
    eng = funded(owners=(owner.address.lower(),))
    intake = Intake(eng, dom)
    o = order(owner.address, True, ETH_PX - PRICE, ONE, 1)
    cmd = intake.place(req(), o, owner.sign_order(dom, o), now=NOW)
    assert isinstance(cmd, PlaceOrder) and cmd.signer == owner.address.lower()
    assert eng.apply(cmd).ack.ok
    # a tampered order no longer recovers to the owner
    o2 = order(owner.address, True, ETH_PX - PRICE, 2 * ONE, 2)
    bad = intake.place(req(), o2, owner.sign_order(dom, o), now=NOW)
    assert isinstance(bad, Ack) and bad.code == Code.BAD_SIGNATURE
    # an agent key works only after the on-chain approval
    by_agent = agent.sign_order(dom, o2)
    assert isinstance(intake.place(req(), o2, by_agent, now=NOW), Ack)
    eng.apply(AgentSet(req(), owner.address, agent.address, True))
    cmd = intake.place(req(), o2, by_agent, now=NOW)
    assert isinstance(cmd, PlaceOrder) and eng.apply(cmd).ack.ok
    # cheap checks before the curve: fee cap, tick, expiry
    o3 = order(owner.address, True, ETH_PX, ONE, 3, max_fee=10)
    r = intake.place(req(), o3, owner.sign_order(dom, o3), now=NOW)
    assert isinstance(r, Ack) and r.code == Code.FEE_TOO_HIGH
    o4 = order(owner.address, True, ETH_PX + 1, ONE, 4)
    r = intake.place(req(), o4, owner.sign_order(dom, o4), now=NOW)
    assert isinstance(r, Ack) and r.code == Code.OFF_TICK
    # withdrawals must be signed by the owner itself, never an agent
    w = Withdrawal(owner.address, 0, 0, USD, 9, NOW + 60)
    assert isinstance(intake.withdrawal(req(), w, agent.sign_withdrawal(dom, w), now=NOW), Ack)
    wc = intake.withdrawal(req(), w, owner.sign_withdrawal(dom, w), now=NOW)
    assert isinstance(wc, RequestWithdrawal) and eng.apply(wc).ack.ok
