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
from crossbook.sdk.risk import MAX_PRICE, account_risk

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
