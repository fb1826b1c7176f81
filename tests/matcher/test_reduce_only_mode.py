"""Reduce-only mode in the matcher (docs/protocol.md §9.8): with a market's oracle price gone, the
engine accepts only orders that shrink a position and keep the account solvent at their limit,
and lets a maker fill only where the contract would apply the fill (both sides strictly reduce,
both solvent at the fill price), so an oracle outage produces no fill the chain busts."""

from __future__ import annotations

import msgspec

from crossbook.config import PRICE, SIZE
from crossbook.margin import Prices, side_delta, simulate_fill_side_unpriced
from matcher.commands import Code, Command, OrderStatus, SetOraclePrices
from matcher.engine import Engine
from matcher.journal import _batch_dec
from matcher.orders import CancelReason, Tif
from matcher.risk import div_notional
from engine_helpers import (
    A,
    B,
    C,
    ETH,
    ETH_PX,
    NOW,
    fills,
    funded,
    place,
    prices_cmd,
    req,
    updates,
)

ONE = SIZE


def outage(eng: Engine) -> None:
    """ETH's oracle price goes away (the adapter refuses it)."""
    r = eng.apply(SetOraclePrices(req(), {}, {}, NOW, [], [ETH]))
    assert r.ack.ok and ETH not in eng.risk.market_prices


def opened() -> Engine:
    """A long 30 ETH at 3000 against B's short, 10,000 USD each; C has no position."""
    eng = funded(usd=10_000, owners=(A, B, C))
    assert place(eng, B, False, ETH_PX, 30 * ONE, nonce=1).ack.ok
    assert fills(place(eng, A, True, ETH_PX, 30 * ONE, nonce=2))
    return eng


def test_orders_that_do_not_shrink_a_position_are_refused() -> None:
    eng = opened()
    outage(eng)
    h = eng.state_hash()
    for owner, is_buy, size, nonce in [(A, True, ONE, 10),  # adds to A's long
                                       (C, True, ONE, 11),  # opens a position
                                       (A, False, 31 * ONE, 12)]:  # flips A's long
        r = place(eng, owner, is_buy, ETH_PX, size, nonce=nonce)
        assert r.ack.code == Code.ORACLE_UNAVAILABLE and not r.journal
        assert "reduce-only mode" in r.ack.message
    assert eng.state_hash() == h


def test_a_close_that_would_leave_a_deficit_is_refused() -> None:
    eng = opened()
    outage(eng)
    h = eng.state_hash()
    # 30 x (2600 - 3000) = -12,000 against ~10,000 of equity
    r = place(eng, A, False, 2600 * PRICE, 30 * ONE, nonce=10, reduce_only=True)
    assert r.ack.code == Code.INSUFFICIENT_MARGIN and not r.journal
    assert eng.state_hash() == h
    # a close the account survives is accepted and rests
    r = place(eng, A, False, 2990 * PRICE, 30 * ONE, nonce=11, reduce_only=True)
    assert r.ack.ok and r.ack.order_id in eng.orders


def test_two_closing_sides_fill() -> None:
    eng = opened()
    outage(eng)
    assert place(eng, B, True, 3010 * PRICE, ONE, nonce=10).ack.ok  # B shrinks its short
    r = place(eng, A, False, 3010 * PRICE, ONE, nonce=11, tif=Tif.IOC)
    fs = fills(r)
    assert len(fs) == 1 and fs[0].size == ONE and fs[0].price == 3010 * PRICE
    assert eng.ledger.position((A, 0), ETH) == 29 * ONE
    assert eng.ledger.position((B, 0), ETH) == -29 * ONE


def test_maker_not_solvent_at_the_fill_price_is_cancelled() -> None:
    eng = opened()
    # before the outage B bids 3300 for 1 ETH: at the 3000 oracle that is a fine close
    bid = place(eng, B, True, 3300 * PRICE, ONE, nonce=10)
    assert bid.ack.ok
    outage(eng)
    # at 3300 B's remaining 29 short is worth 8,700 less: below maintenance, so the contract
    # would refuse that fill; A's close itself is fine
    r = place(eng, A, False, 3300 * PRICE, ONE, nonce=11, tif=Tif.IOC)
    assert r.ack.ok and not fills(r)
    got = {(u.order_id, u.status, u.reason) for u in updates(r)}
    assert (bid.ack.order_id, OrderStatus.CANCELLED, CancelReason.RISK) in got
    assert eng.ledger.position((A, 0), ETH) == 30 * ONE


def test_resting_order_that_would_grow_a_position_is_cancelled_when_reached() -> None:
    eng = opened()
    r = place(eng, C, True, 2990 * PRICE, ONE, nonce=10)  # C's bid opens a position
    assert r.ack.ok
    outage(eng)
    t = place(eng, A, False, 2990 * PRICE, ONE, nonce=11, tif=Tif.IOC)
    assert t.ack.ok and not fills(t)
    assert any(u.order_id == r.ack.order_id and u.reason == CancelReason.RISK
               for u in updates(t))


def test_the_maker_rule_is_the_contract_rule() -> None:
    """RiskModel.check_fill_unpriced accepts exactly where crossbook.margin's reduce-only rule
    does, across fill prices on both sides of B's solvency at the fill price."""
    eng = opened()
    outage(eng)
    risk = eng.risk
    st = eng.account(B, 0)
    funding = eng.ledger.proj_funding
    seen = set()
    for px in range(3000, 3400, 5):
        price = px * PRICE
        got = risk.check_fill_unpriced(st, ETH, True, ONE, price, eng.maker_fee, funding)
        cash = div_notional(ONE * price)
        d, signed = side_delta(True, ONE, cash)
        want = simulate_fill_side_unpriced(
            st, risk.params, Prices(risk.asset_prices, risk.market_prices, funding), ETH, price,
            d, signed, cash * eng.maker_fee // 1_000_000)
        assert (got is not None) == want.accepted
        seen.add(want.accepted)
    assert seen == {True, False}


def test_price_back_ends_reduce_only_mode() -> None:
    eng = opened()
    outage(eng)
    assert place(eng, C, True, ETH_PX, ONE, nonce=10).ack.code == Code.ORACLE_UNAVAILABLE
    assert eng.apply(prices_cmd()).ack.ok
    assert place(eng, C, True, ETH_PX, ONE, nonce=11).ack.ok


def test_replay_skips_the_gate_and_restores_the_same_state() -> None:
    """The outage is journaled like any price update: replay gives the same state."""
    eng = opened()
    outage(eng)
    assert place(eng, B, True, 3010 * PRICE, ONE, nonce=10).ack.ok
    snap = eng.snapshot()
    twin = Engine.restore(snap)
    assert twin.state_hash() == eng.state_hash()
    assert ETH not in twin.risk.market_prices


def test_journals_before_the_gone_fields_still_decode() -> None:
    class OldSetOraclePrices(msgspec.Struct, frozen=True, array_like=True, tag=13):
        req_id: int
        assets: dict[int, int]
        markets: dict[int, int]
        now: int

    raw = msgspec.msgpack.encode([(7, OldSetOraclePrices(1, {1: 5}, {0: 5}, NOW))])
    [(seq, cmd)] = _batch_dec.decode(raw)
    want: Command = SetOraclePrices(1, {1: 5}, {0: 5}, NOW)
    assert seq == 7 and cmd == want and cmd.gone_markets == [] and cmd.gone_assets == []
