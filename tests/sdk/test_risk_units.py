"""crossbook.sdk.risk liquidation prices checked against compute_health at and around them;
crossbook.sdk.units conversions (no floats); nonce persistence."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbook.config import PRICE, SIZE, USD, risk_params
from crossbook.margin import Position, Prices, SubAccount, compute_health
from crossbook.sdk import NonceManager, liquidation_price, units
from crossbook.sdk.risk import MAX_PRICE, account_risk, at_feed_price, feed_assets, liquidation_bounds

PARAMS = risk_params()
PRICES = Prices(assets={1: 3_000 * PRICE, 2: 60_000 * PRICE},
                markets={0: 3_000 * PRICE, 1: 60_000 * PRICE, 2: 150 * PRICE}, funding={0: 0, 1: 0, 2: 0})


def mm(acct: SubAccount, market: int, px: int) -> int:
    markets = dict(PRICES.markets)
    markets[market] = px
    return compute_health(acct, PARAMS, PRICES.assets, markets, PRICES.funding).maintenance_health


@settings(max_examples=60, deadline=None)
@given(size=st.integers(-50 * SIZE, 50 * SIZE).filter(lambda s: s != 0),
       quote=st.integers(-200_000 * USD, 300_000 * USD),
       other=st.integers(-5 * SIZE, 5 * SIZE))
def test_liquidation_price_is_the_boundary(size: int, quote: int, other: int) -> None:
    acct = SubAccount(quote=quote, positions={0: Position(size, size * 3_000 * PRICE // 10**10, 0),
                                              1: Position(other, other * 60_000 * PRICE // 10**10, 0)})
    p = liquidation_price(acct, PARAMS, PRICES, 0)
    if p is None:
        probes = [1, 2, 10**6, 3_000 * PRICE, MAX_PRICE]
        assert all(mm(acct, 0, x) >= 0 for x in probes)
        return
    assert mm(acct, 0, p) < 0
    if size > 0:  # long: safe at every price above
        for x in (p + 1, p + 2, p + 3, p + 1000, 2 * p + 1):
            if x <= MAX_PRICE:
                assert mm(acct, 0, x) >= 0, x
    else:  # short: safe at every price below
        for x in (p - 1, p - 2, p - 1000, p // 2):
            if x >= 1:
                assert mm(acct, 0, x) >= 0, x


def mm_feed(acct: SubAccount, market: int, px: int) -> int:
    """Maintenance health with ``market``'s feed at ``px`` (WETH, on ETH's feed, moves with it)."""
    at = at_feed_price(PARAMS, PRICES, market, px)
    return compute_health(acct, PARAMS, at.assets, at.markets, at.funding).maintenance_health


def test_collateral_on_the_feed_moves_with_it() -> None:
    """A long ETH backed by WETH is liquidated sooner than one backed by the same USD value in
    USDC: the collateral falls with the price (the CLI, the dashboard and bots all say so)."""
    assert feed_assets(PARAMS, 0) == (1,) and feed_assets(PARAMS, 2) == ()
    pos = {0: Position(10 * SIZE, 30_000 * USD, 0)}
    usdc = SubAccount(quote=3_000 * USD - 30_000 * USD, positions=dict(pos))
    weth = SubAccount(quote=-30_000 * USD, collateral={1: 10**18 * 3_000 * USD // (3_000 * USD * 9 // 10)},
                      positions=dict(pos))
    a, b = liquidation_price(usdc, PARAMS, PRICES, 0), liquidation_price(weth, PARAMS, PRICES, 0)
    assert a is not None and b is not None and a < b < 3_000 * PRICE
    assert mm_feed(weth, 0, b) < 0 <= mm_feed(weth, 0, b + 1)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(size=st.integers(-50 * SIZE, 50 * SIZE).filter(lambda s: s != 0),
       quote=st.integers(-200_000 * USD, 300_000 * USD),
       weth=st.integers(0, 100 * 10**18))
def test_liquidation_price_with_collateral_on_the_feed(size: int, quote: int, weth: int) -> None:
    """Longs: the exact boundary, safe above it. Shorts holding WETH (health concave in the
    price): the current price if liquidatable there, else the nearer of the boundaries above and
    below it (safe on the current price's side of it), or None when health is >= 0 at both ends."""
    acct = SubAccount(quote=quote, collateral={1: weth} if weth else {},
                      positions={0: Position(size, size * 3_000 * PRICE // 10**10, 0)})
    p = liquidation_price(acct, PARAMS, PRICES, 0)
    now = PRICES.markets[0]
    if size > 0:
        if p is None:
            assert all(mm_feed(acct, 0, x) >= 0 for x in (1, 2, 10**6, now, MAX_PRICE))
            return
        assert mm_feed(acct, 0, p) < 0
        for x in (p + 1, p + 2, p + 1000, 2 * p + 1):
            if x <= MAX_PRICE:
                assert mm_feed(acct, 0, x) >= 0, x
    elif weth == 0:
        if p is not None:
            assert mm_feed(acct, 0, p) < 0 and (p == 1 or mm_feed(acct, 0, p - 1) >= 0)
    elif p is None:
        assert min(mm_feed(acct, 0, x) for x in (1, now, MAX_PRICE)) >= 0
    elif p == now:
        assert mm_feed(acct, 0, now) < 0
    else:
        step = -1 if p > now else 1  # towards the current price: safe from the next price on
        assert mm_feed(acct, 0, p) < 0 <= mm_feed(acct, 0, p + step)
        # none nearer on the other side: safe there at one price less than p's distance (the
        # liquidatable prices on each side are a lower / an upper set)
        mirror = 2 * now - p - step
        if 1 <= mirror <= MAX_PRICE:
            assert mm_feed(acct, 0, mirror) >= 0, mirror


def test_a_short_outweighed_by_its_collateral_is_liquidated_by_a_fall() -> None:
    """Short 1 ETH against 10 WETH: net long nine, so a fall liquidates it, not a rise."""
    acct = SubAccount(quote=-20_000 * USD, collateral={1: 10 * 10**18},
                      positions={0: Position(-SIZE, -3_000 * USD, 0)})
    p = liquidation_price(acct, PARAMS, PRICES, 0)
    assert p is not None and p < PRICES.markets[0]
    assert mm_feed(acct, 0, p) < 0 <= mm_feed(acct, 0, p + 1)


def test_a_hedged_short_has_a_liquidation_price_on_each_side() -> None:
    """Short 1,000 ETH against 1,211.1 WETH (0.9 weight: 1,090 ETH of margin value): below 5M
    USD of notional (requirement 3-6%) it is net long, so a fall liquidates it; beyond, the
    requirement is 12% and a rise liquidates it too (health is concave in the price)."""
    acct = SubAccount(quote=-70_000 * USD, collateral={1: 1_211_100 * 10**15},
                      positions={0: Position(-1_000 * SIZE, -3_000_000 * USD, 0)})
    down, up = liquidation_bounds(acct, PARAMS, PRICES, 0)
    now = PRICES.markets[0]
    assert down is not None and up is not None and down < now < up
    assert 1_300 * PRICE < down < 1_400 * PRICE and 8_600 * PRICE < up < 8_700 * PRICE
    assert mm_feed(acct, 0, down) < 0 <= mm_feed(acct, 0, down + 1)
    assert mm_feed(acct, 0, up) < 0 <= mm_feed(acct, 0, up - 1)
    assert all(mm_feed(acct, 0, x) < 0 for x in (1, down // 2, 2 * up, MAX_PRICE))
    assert liquidation_price(acct, PARAMS, PRICES, 0) == down  # the nearer one
    row = account_risk(acct, PARAMS, PRICES).positions[0]
    assert (row.liquidation_price, row.liquidation_bounds) == (down, (down, up))
    # a long or a plain short has one side only
    assert liquidation_bounds(SubAccount(quote=-2_000 * USD, positions={0: Position(SIZE, 3_000 * USD, 0)}),
                              PARAMS, PRICES, 0)[1] is None
    assert liquidation_bounds(SubAccount(quote=4_000 * USD, positions={0: Position(-SIZE, -3_000 * USD, 0)}),
                              PARAMS, PRICES, 0)[0] is None


def test_account_risk_leverage() -> None:
    acct = SubAccount(quote=1_000 * USD - 3_000 * USD, positions={0: Position(SIZE, 3_000 * USD, 0)})
    r = account_risk(acct, PARAMS, PRICES)
    assert r.health.equity == 1_000 * USD and r.leverage_ppm == 3_000_000
    lp = r.positions[0].liquidation_price
    assert lp is not None and 2_000 * PRICE < lp < 2_100 * PRICE


def test_units_exact_and_no_floats(tmp_path: Path) -> None:
    assert units.price("3000.5") == 300_050_000_000
    assert units.size(Decimal("0.001")) == 100_000
    assert units.quote(5) == 5 * USD
    assert units.price("1.000000001", "down") == 100_000_000
    assert units.price("1.000000001", "up") == 100_000_001
    with pytest.raises(ValueError):
        units.price("1.000000001")
    with pytest.raises(TypeError):
        units.price(1.5)  # type: ignore[arg-type]
    assert units.fmt(300_050_000_000, units.PRICE_SCALE, 2) == "3000.50"
    assert units.fmt(-150, units.QUOTE_SCALE) == "-0.00015"
    assert units.ceil_to(1001, 10) == 1010 and units.floor_to(1009, 10) == 1000
    path = tmp_path / "nonces.json"
    n = NonceManager(path, start=5)
    assert [n.next("0xAB"), n.next("0xab")] == [5, 6]
    # a restart resumes above everything handed out (reserved in blocks)
    assert NonceManager(path, start=5).next("0xab") > 6
