"""Differential test of reduce-only mode (docs/protocol.md §9.8) on anvil: with ETH's oracle stale,
random fills in ETH between random portfolios, at fill prices on both sides of each account's
solvency, get exactly the outcome crossbook.margin predicts (both sides must shrink without
flipping, every other price must be there, both sides must keep maintenance health >= 0 with ETH
valued at the fill price), applied or refused with the contract's reason."""
from __future__ import annotations

import random

from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, USD, risk_params
from crossbook.margin import (
    SubAccount,
    fee_amount,
    fill_cash,
    reduces_without_flip,
    side_delta,
    simulate_fill_side_unpriced,
)
from crossbook.protocol_types import FillItem, RejectReason

ETH, BTC = 0, 1
TICK = DEFAULT_SPEC.markets[ETH].tick_size
LOT = DEFAULT_SPEC.markets[ETH].lot_size
WHALE = user_signer(1)
USERS = [user_signer(20 + i) for i in range(10)]
ITEMS = 60


def _predict(ex: LocalExchange, item: FillItem) -> int:
    """The contract's reason for ``item`` in reduce-only mode by crossbook.margin (0: applied)."""
    params = risk_params()
    prices = ex.client.available_prices()  # the adapter's answers as the contract sees them
    assert ETH not in prices.markets
    cash = fill_cash(item.size, item.price)
    sides = []
    for order, fee_ppm in ((item.taker, item.taker_fee_ppm), (item.maker, item.maker_fee_ppm)):
        st: SubAccount = ex.client.subaccount(order.owner, order.subaccount)
        pos = st.positions.get(ETH)
        s = pos.size if pos is not None else 0
        d, signed = side_delta(order.is_buy, item.size, cash)
        if not reduces_without_flip(s, s + d):
            return int(RejectReason.ORACLE_UNAVAILABLE)
        sides.append((st, d, signed, fee_amount(cash, fee_ppm)))
    outs = []
    for st, d, signed, fee in sides:
        try:
            outs.append(simulate_fill_side_unpriced(st, params, prices, ETH, item.price, d, signed, fee))
        except KeyError:
            return int(RejectReason.ORACLE_UNAVAILABLE)
    if not all(o.accepted for o in outs):
        return int(RejectReason.INSUFFICIENT_MARGIN)
    return 0


def _setup(ex: LocalExchange, rng: random.Random) -> None:
    """Users long or short ETH at 3000 against the whale at 1x-15x, some with a BTC position, one
    with WETH collateral (priced by the ETH feed, so it goes stale with it)."""
    ex.fund(WHALE.address, 0, "USDC", 50_000_000 * USD)
    items = []
    for u in USERS:
        usd = rng.randint(1_000, 20_000)
        ex.fund(u.address, 0, "USDC", usd * USD)
        if u is USERS[0]:
            ex.fund(u.address, 0, "WETH", 10**18)
        lev = rng.randint(1, 15)
        size = max(LOT, (usd * lev * SIZE // 3_000) // LOT * LOT)
        is_buy = rng.random() < 0.5
        px = 3_000 * PRICE
        items.append(ex.fill(ex.order(u, ETH, is_buy, px, size), ex.order(WHALE, ETH, not is_buy, px, size),
                             size, px))
        if rng.random() < 0.3:
            bpx = 60_000 * PRICE
            bsz = DEFAULT_SPEC.markets[BTC].lot_size * rng.randint(1, 100)
            items.append(ex.fill(ex.order(u, BTC, True, bpx, bsz), ex.order(WHALE, BTC, False, bpx, bsz),
                                 bsz, bpx))
    assert not ex.settle(items).rejected


def _freeze_eth(ex: LocalExchange) -> None:
    """Two hours pass; every feed but ETH is posted again, so only ETH (and WETH) is stale."""
    ex.advance_time(2 * 3600)
    for sym in ("BTC", "SOL"):
        feed = ex.client.feed(sym)
        ex.admin.transact(feed.functions.setAnswer(feed.functions.latestRoundData().call()[1]))


def _random_item(ex: LocalExchange, rng: random.Random) -> FillItem:
    pos = {u.address: ex.client.position(u.address, 0, ETH).size for u in USERS}
    t = rng.choice(USERS)
    pos_t = pos[t.address]
    # mostly the taker closes part of its position, now and then more than all of it, or adds
    if pos_t and rng.random() < 0.85:
        is_buy = pos_t < 0
        lots = abs(pos_t) // LOT
        size = LOT * rng.randint(1, max(1, lots + (lots // 4 if rng.random() < 0.15 else 0)))
    else:
        is_buy = rng.random() < 0.5
        size = LOT * rng.randint(1, 50)
    # mostly a maker whose side shrinks its own position (it sells when the taker buys)
    closing = [u for u in USERS if u is not t and pos[u.address] and (pos[u.address] > 0) == is_buy]
    if closing and rng.random() < 0.85:
        m = rng.choice(closing)
        size = min(size, abs(pos[m.address]) // LOT * LOT) or LOT
    else:
        m = rng.choice([u for u in USERS if u is not t])
    # fill prices from far below to far above the 3000 the positions were opened at
    price = 3_000 * PRICE * rng.randint(60, 140) // 100 // TICK * TICK
    # both limits at the fill price: PRICE_LIMIT never decides
    return ex.fill(ex.order(t, ETH, is_buy, price, size), ex.order(m, ETH, not is_buy, price, size),
                   size, price)


def test_reduce_only_mode_outcomes_equal_crossbook_margin(ex: LocalExchange) -> None:
    rng = random.Random(20261125)
    _setup(ex, rng)
    _freeze_eth(ex)
    seen: dict[int, int] = {}
    for _ in range(ITEMS):
        item = _random_item(ex, rng)
        want = _predict(ex, item)
        res = ex.settle([item])
        got = int(res.rejected.get(res.first_seq, 0))
        assert got == want, (item, got, want)
        seen[got] = seen.get(got, 0) + 1
    # every branch of the rule was exercised: applied, not solvent at the fill price, and not a
    # reduction on both sides (or another price missing)
    assert seen.get(0, 0) >= 3, seen
    assert seen.get(int(RejectReason.INSUFFICIENT_MARGIN), 0) >= 3, seen
    assert seen.get(int(RejectReason.ORACLE_UNAVAILABLE), 0) >= 3, seen
