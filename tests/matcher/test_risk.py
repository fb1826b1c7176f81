"""RiskModel: worst-case-per-side order check, risk-reducing exemption, maker fill re-check."""

from __future__ import annotations

from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, USD, risk_params
from crossbook.margin import Position, SubAccount, apply_fill_side, compute_health
from matcher.risk import RiskModel

ETH, BTC = 0, 1
P_ETH, P_BTC = 3000 * PRICE, 60_000 * PRICE
FUND = {0: 0, 1: 0, 2: 0}


def model() -> RiskModel:
    r = RiskModel(risk_params(DEFAULT_SPEC), 500, 200)
    r.market_prices.update({0: P_ETH, 1: P_BTC, 2: 150 * PRICE})
    r.asset_prices.update({1: P_ETH, 2: P_BTC})
    return r


def manual(st: SubAccount, legs: list[tuple[int, int, int]], fee_ppm: int) -> int:
    """Reference: apply each (market, signed size, price) leg with the margin code."""
    acc = st.copy()
    for m, d, px in legs:
        cash = abs(d) * px // 10**10
        apply_fill_side(acc, m, d, cash if d > 0 else -cash, cash * fee_ppm // 10**6, 0)
    r = model()
    return compute_health(acc, r.params, r.asset_prices, r.market_prices, FUND).initial_health


def test_worst_case_matches_reference_across_markets() -> None:
    r = model()
    st = SubAccount(50_000 * USD, {1: 10 * 10**18})
    # open buys: 5 ETH at 2990 and 0.3 BTC at 59,000; open sells are a separate scenario
    exposure = {
        ETH: [5 * SIZE, 5 * SIZE * 2990 * PRICE, 7 * SIZE, 7 * SIZE * 3100 * PRICE],
        BTC: [3 * SIZE // 10, 3 * SIZE // 10 * 59_000 * PRICE, 0, 0],
    }
    got = r.worst_case(st, exposure, True, FUND, (ETH, 2 * SIZE, 2 * SIZE * 2980 * PRICE))
    # the new order merges with the ETH leg (one aggregate fill per market)
    px_eth_total = 5 * SIZE * 2990 * PRICE + 2 * SIZE * 2980 * PRICE
    acc = st.copy()
    apply_fill_side(acc, ETH, 7 * SIZE, px_eth_total // 10**10,
                    px_eth_total // 10**10 * 500 // 10**6, 0)
    cash_btc = 3 * SIZE // 10 * 59_000 * PRICE // 10**10
    apply_fill_side(acc, BTC, 3 * SIZE // 10, cash_btc, cash_btc * 500 // 10**6, 0)
    want = compute_health(acc, r.params, r.asset_prices, r.market_prices, FUND).initial_health
    assert got == want
    sells = r.worst_case(st, exposure, False, FUND, None)
    assert sells == manual(st, [(ETH, -7 * SIZE, 3100 * PRICE)], 500)


def test_check_order_boundary() -> None:
    r = model()
    st = SubAccount(10_000 * USD)
    # 60 ETH at the mark: requirement 9,000 + taker fee 90 -> health 910
    assert r.check_order(st, None, ETH, True, 60 * SIZE, P_ETH, FUND)
    assert r.worst_case(st, {}, True, FUND, (ETH, 60 * SIZE, 60 * SIZE * P_ETH)) == 910 * USD
    # 66 ETH: 9,900 + 99 -> 1 USD left; 67 ETH: 10,050 + 100.5 -> refused
    assert r.worst_case(st, {}, True, FUND, (ETH, 66 * SIZE, 66 * SIZE * P_ETH)) == USD
    assert r.check_order(st, None, ETH, True, 66 * SIZE, P_ETH, FUND)
    assert not r.check_order(st, None, ETH, True, 67 * SIZE, P_ETH, FUND)
    # the same size is fine when the other side carries the exposure
    exposure = {ETH: [0, 0, 60 * SIZE, 60 * SIZE * P_ETH]}
    assert r.check_order(st, exposure, ETH, True, 60 * SIZE, P_ETH, FUND)
    assert not r.check_order(st, {ETH: [10 * SIZE, 10 * SIZE * P_ETH, 0, 0]}, ETH, True,
                             60 * SIZE, P_ETH, FUND)


def test_reducing_order_exempt_even_when_unhealthy() -> None:
    r = model()
    # long 60 ETH bought at 3000, quote nearly exhausted, mark at 2900: initial health < 0
    st = SubAccount(10_000 * USD - 180_000 * USD,
                    positions={ETH: Position(60 * SIZE, 180_000 * USD, 0)})
    r.market_prices[ETH] = 2900 * PRICE
    assert r.health(st, FUND) < 0
    assert r.reduces(st, None, ETH, False, 10 * SIZE)
    assert r.check_order(st, None, ETH, False, 10 * SIZE, 2900 * PRICE, FUND)
    # open sells count: with 55 already working, 10 more would flip the position
    ex = {ETH: [0, 0, 55 * SIZE, 55 * SIZE * 2900 * PRICE]}
    assert not r.reduces(st, ex, ETH, False, 10 * SIZE)
    assert not r.check_order(st, None, ETH, True, SIZE, 2900 * PRICE, FUND)
    # a sell far below the mark loses more than it frees: not exempt
    assert not r.check_order(st, None, ETH, False, 10 * SIZE, 2000 * PRICE, FUND)


def test_check_fill_rule_and_missing_price() -> None:
    r = model()
    st = SubAccount(10_000 * USD)
    after = r.check_fill(st, ETH, True, 60 * SIZE, P_ETH, 200, FUND)
    assert after is not None and after.positions[ETH].size == 60 * SIZE
    assert st.positions == {}  # input untouched
    assert r.check_fill(st, ETH, True, 70 * SIZE, P_ETH, 200, FUND) is None
    del r.market_prices[ETH]
    assert r.check_fill(st, ETH, True, SIZE, P_ETH, 200, FUND) is None
