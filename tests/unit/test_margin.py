"""Hand-computed examples of the margin model (docs/protocol.md section 3)."""

from __future__ import annotations

import pytest

from crossbook.fixedpoint import (
    NOTIONAL_DIV,
    PPM,
    UINT256_MAX,
    ceil_div,
    check_int,
    check_uint,
    floor_div,
    trunc_div,
)
from crossbook.margin import (
    CollateralConfig,
    ConfigError,
    Health,
    MarketConfig,
    Position,
    Prices,
    RiskParams,
    SubAccount,
    Tier,
    accrued_funding,
    apply_fill_side,
    apply_funding_rate,
    check_fill_side,
    collateral_value,
    compute_health,
    compute_health_at,
    fee_amount,
    fill_cash,
    is_liquidatable,
    position_notional,
    position_value,
    reduces_without_flip,
    requirement,
    requirements,
    simulate_fill_side,
    strictly_reduces_risk,
)

USD = 10**6  # quote atoms per dollar
PX = 10**8  # price scale
BTC = 10**8  # size scale

TIERS = (
    Tier(1_000_000 * USD, 100_000, 50_000),  # 10% / 5% up to 1M notional
    Tier(5_000_000 * USD, 200_000, 100_000),  # 20% / 10% from 1M to 5M
    Tier(UINT256_MAX, 500_000, 250_000),  # the last tier is unbounded
)
BTC_MARKET = MarketConfig(feed_id=1, tick_size=PX, lot_size=10**4, open_interest_cap=10**12,
                          max_funding_ppm=1_000, tiers=TIERS)
ETH = CollateralConfig(token_decimals=18, feed_id=2, weight_init_ppm=800_000,
                       weight_maint_ppm=900_000, deposit_cap=10**30)
PARAMS = RiskParams(collaterals={1: ETH}, markets={0: BTC_MARKET}, pnl_haircut_ppm=500_000)


def test_rounding_helpers() -> None:
    assert floor_div(-7, 2) == -4 and ceil_div(-7, 2) == -3 and trunc_div(-7, 2) == -3
    assert floor_div(7, 2) == 3 and ceil_div(7, 2) == 4 and trunc_div(7, 2) == 3
    assert trunc_div(7, -2) == -3 and trunc_div(-7, -2) == 3
    assert ceil_div(0, 5) == 0 and trunc_div(0, -5) == 0
    assert NOTIONAL_DIV == 10**10


def test_range_checks() -> None:
    assert check_uint(2**64 - 1, 64, "x") == 2**64 - 1
    with pytest.raises(ValueError):
        check_uint(2**64, 64, "x")
    with pytest.raises(ValueError):
        check_uint(-1, 8, "x")
    assert check_int(-(2**95), 96, "x") == -(2**95)
    with pytest.raises(ValueError):
        check_int(2**95, 96, "x")
    with pytest.raises(ValueError):
        check_uint(True, 8, "x")  # bools are not ints on the wire


def test_requirement_tier_boundaries() -> None:
    cap0 = 1_000_000 * USD
    assert requirement(0, TIERS, "init") == 0
    assert requirement(1, TIERS, "init") == 1  # ceil(0.1)
    assert requirement(cap0, TIERS, "init") == 100_000 * USD
    assert requirement(cap0, TIERS, "maint") == 50_000 * USD
    # one atom into tier 1: tier 0 full, tier 1 ceil(1 * 0.2) = 1
    assert requirement(cap0 + 1, TIERS, "init") == 100_000 * USD + 1
    assert requirement(cap0 + 1, TIERS, "maint") == 50_000 * USD + 1
    # 7M: 1M*10% + 4M*20% + 2M*50%
    assert requirement(7_000_000 * USD, TIERS, "init") == (100_000 + 800_000 + 1_000_000) * USD
    assert requirement(7_000_000 * USD, TIERS, "maint") == (50_000 + 400_000 + 500_000) * USD
    # the fast banded version agrees
    assert requirements(7_000_000 * USD, BTC_MARKET) == (1_900_000 * USD, 950_000 * USD)
    assert requirements(cap0 + 1, BTC_MARKET) == (100_000 * USD + 1, 50_000 * USD + 1)


def test_requirement_rounds_up_per_tier() -> None:
    tiers = (Tier(10, 333_333, 111_111), Tier(20, 500_000, 250_000))
    # tier0: ceil(10*0.333333)=4, tier1: ceil(5*0.5)=3 (portion 5 of the unbounded last tier)
    assert requirement(15, tiers, "init") == 4 + 3
    assert requirement(15, tiers, "maint") == 2 + 2  # ceil(1.11111) + ceil(1.25)


def test_per_term_formulas() -> None:
    assert position_value(1, 1) == 0
    assert position_value(-1, 1) == -1  # floor, not trunc
    assert position_notional(-1, 1) == 1  # ceil
    assert position_value(BTC, 60_000 * PX) == 60_000 * USD
    assert collateral_value(2 * 10**18, 3_000 * PX, ETH) == 6_000 * USD
    assert collateral_value(1, 1, ETH) == 0  # floor of 1e-20


def test_funding_rounding_long_and_short() -> None:
    # longs owe rounded up, shorts receive rounded toward zero: the system keeps the dust
    assert accrued_funding(1, 1, 0) == 1
    assert accrued_funding(-1, 1, 0) == 0
    assert accrued_funding(3 * BTC, 12_345, 0) == 371  # 370.35 -> 371
    assert accrued_funding(-3 * BTC, 12_345, 0) == -370  # -370.35 -> -370
    assert accrued_funding(BTC, 0, 100 * PX) == -100 * USD  # index fell: long receives


def test_apply_funding_rate_clamps_and_truncates() -> None:
    assert apply_funding_rate(0, 2_000, 1_000, 50_000 * PX) == 1_000 * 50_000 * PX // PPM
    assert apply_funding_rate(0, -2_000, 1_000, 50_000 * PX) == -(1_000 * 50_000 * PX // PPM)
    # -3 * 333333 / 1e6 = -0.999999: trunc gives 0 where floor would give -1
    assert apply_funding_rate(10, -3, 1_000, 333_333) == 10
    assert apply_funding_rate(10, 3, 1_000, 333_333) == 10
    assert apply_funding_rate(10, 4, 1_000, 333_333) == 11


def _example_account() -> SubAccount:
    return SubAccount(
        quote=10_000 * USD,
        collateral={1: 2 * 10**18},
        positions={0: Position(size=BTC, open_notional=50_000 * USD, funding_snapshot=0)},
    )


def test_compute_health_hand_example() -> None:
    # long 1 BTC bought at 50k, mark 60k, +2 ETH at 3000, funding index moved by 100 USD
    prices = Prices(assets={1: 3_000 * PX}, markets={0: 60_000 * PX}, funding={0: 100 * PX})
    h = compute_health_at(_example_account(), PARAMS, prices)
    pv, funding, v_eth = 60_000 * USD, 100 * USD, 6_000 * USD
    w_init, w_maint = v_eth * 8 // 10, v_eth * 9 // 10
    haircut = (pv - 50_000 * USD) // 2
    assert h.equity == 10_000 * USD + pv - funding + w_maint == 75_300 * USD
    assert h.initial_equity == 10_000 * USD + pv - funding + w_init - haircut == 69_700 * USD
    assert h.initial_requirement == 6_000 * USD and h.maintenance_requirement == 3_000 * USD
    assert h.initial_health == 63_700 * USD and h.maintenance_health == 72_300 * USD
    assert not is_liquidatable(h)


def test_haircut_only_on_gains_and_rounds_up() -> None:
    acct = SubAccount(quote=0, positions={
        0: Position(size=BTC, open_notional=60_000 * USD - 3, funding_snapshot=0),  # +3 gain
        1: Position(size=-BTC, open_notional=-60_000 * USD, funding_snapshot=0),  # 0 gain
    })
    params = RiskParams(collaterals={}, markets={0: BTC_MARKET, 1: BTC_MARKET},
                        pnl_haircut_ppm=500_000)
    h = compute_health(acct, params, {}, {0: 60_000 * PX, 1: 60_000 * PX}, {0: 0, 1: 0})
    assert h.equity == 0
    assert h.initial_equity == -2  # ceil(3 * 0.5) = 2
    # a loss on another leg does not offset the haircut base (sum of max(U, 0))
    acct.positions[1].open_notional = -59_000 * USD  # short sold at 59k: U = -1000 USD
    h2 = compute_health(acct, params, {}, {0: 60_000 * PX, 1: 60_000 * PX}, {0: 0, 1: 0})
    assert h2.equity == 0  # the basis never enters equity, only the haircut
    assert h2.initial_equity == -2
    acct.positions[1].open_notional = -61_000 * USD  # short sold at 61k: U = +1000 USD
    h3 = compute_health(acct, params, {}, {0: 60_000 * PX, 1: 60_000 * PX}, {0: 0, 1: 0})
    assert h3.initial_equity == -ceil_div((1_000 * USD + 3) * 500_000, PPM) == -500_000_002


def test_liquidatable_below_maintenance() -> None:
    # long 1 BTC at 60k with 2_999 USD of own money: maint requirement at 60k is 3_000
    acct = SubAccount(quote=-57_001 * USD, positions={0: Position(BTC, 60_000 * USD, 0)})
    params = RiskParams(collaterals={}, markets={0: BTC_MARKET}, pnl_haircut_ppm=0)
    h = compute_health(acct, params, {}, {0: 60_000 * PX}, {0: 0})
    assert h.maintenance_health == -1 * USD
    assert is_liquidatable(h)
    acct.quote += USD
    assert not is_liquidatable(compute_health(acct, params, {}, {0: 60_000 * PX}, {0: 0}))


def test_zero_entries_need_no_price() -> None:
    acct = SubAccount(quote=5, collateral={1: 0}, positions={7: Position(0, 0, 123)})
    h = compute_health(acct, PARAMS, {}, {}, {})
    assert h == Health(5, 5, 0, 0, 5, 5)


def test_apply_fill_side_open_reduce_flip() -> None:
    acct = SubAccount()
    price = 50_000 * PX
    cash = fill_cash(2 * BTC, price)
    fee = fee_amount(cash, 500)
    assert (cash, fee) == (100_000 * USD, 50 * USD)
    assert apply_fill_side(acct, 0, 2 * BTC, cash, fee, 0) == 0
    assert acct.quote == -100_050 * USD
    assert acct.positions[0] == Position(2 * BTC, 100_000 * USD, 0)

    # reduce by 0.5 at 60k after funding moved by +10 USD: long pays 2 * 10 = 20 USD first
    cash2 = fill_cash(BTC // 2, 60_000 * PX)
    realized = apply_fill_side(acct, 0, -(BTC // 2), -cash2, 0, 10 * PX)
    assert realized == 20 * USD
    assert acct.quote == -100_050 * USD - 20 * USD + 30_000 * USD
    assert acct.positions[0] == Position(3 * BTC // 2, 75_000 * USD, 10 * PX)

    # flip: sell 3 at 40k -> short 1.5 with basis -1.5 * 40k
    cash3 = fill_cash(3 * BTC, 40_000 * PX)
    apply_fill_side(acct, 0, -3 * BTC, -cash3, 0, 10 * PX)
    assert acct.positions[0] == Position(-3 * BTC // 2, -60_000 * USD, 10 * PX)

    # close exactly: size 0 clears the basis
    apply_fill_side(acct, 0, 3 * BTC // 2, fill_cash(3 * BTC // 2, 40_000 * PX), 0, 10 * PX)
    assert acct.positions[0].size == 0 and acct.positions[0].open_notional == 0


def test_reduce_uses_trunc_div() -> None:
    acct = SubAccount(positions={0: Position(-3, -10, 0)})
    apply_fill_side(acct, 0, 1, 0, 0, 0)
    assert acct.positions[0].open_notional == -6  # trunc(-20/3); floor would be -7
    acct2 = SubAccount(positions={0: Position(3, 10, 0)})
    apply_fill_side(acct2, 0, -1, 0, 0, 0)
    assert acct2.positions[0].open_notional == 6


def test_flip_basis_uses_trunc_div() -> None:
    acct = SubAccount(positions={0: Position(1, 5, 0)})
    apply_fill_side(acct, 0, -3, -10, 0, 0)  # new size -2, basis trunc(-10 * -2 / -3)
    assert acct.positions[0] == Position(-2, -6, 0)


def test_zero_delta_refused() -> None:
    with pytest.raises(ValueError):
        apply_fill_side(SubAccount(), 0, 0, 0, 0, 0)


def test_reduce_and_risk_rule() -> None:
    assert reduces_without_flip(5, 3) and reduces_without_flip(5, 0)
    assert reduces_without_flip(-5, -1) and not reduces_without_flip(-5, 1)
    assert not reduces_without_flip(5, -1) and not reduces_without_flip(5, 5)
    assert not reduces_without_flip(0, 0) and not reduces_without_flip(5, 6)
    bad = Health(0, 0, 0, 0, -10, 0)
    worse = Health(0, 0, 0, 0, -11, 0)
    better = Health(0, 0, 0, 0, -9, 0)
    ok = Health(0, 0, 0, 0, 0, 0)
    assert strictly_reduces_risk(5, 3, bad, better)
    assert strictly_reduces_risk(5, 3, bad, bad)  # equal health is enough
    assert not strictly_reduces_risk(5, 3, bad, worse)
    assert not strictly_reduces_risk(5, -3, bad, better)  # flip never counts
    assert check_fill_side(0, 5, bad, ok)  # H_im >= 0 after is always fine
    assert not check_fill_side(0, 5, ok, bad)
    assert check_fill_side(5, 3, bad, better)
    assert not check_fill_side(5, 6, bad, better)


def test_simulate_fill_side_leaves_account_untouched() -> None:
    acct = SubAccount(quote=1_000 * USD)
    params = RiskParams(collaterals={}, markets={0: BTC_MARKET}, pnl_haircut_ppm=0)
    prices = Prices({}, {0: 50_000 * PX}, {0: 0})
    cash = fill_cash(BTC // 10, 50_000 * PX)  # 5_000 USD notional needs 500 initial
    out = simulate_fill_side(acct, params, prices, 0, BTC // 10, cash, 0)
    assert out.accepted and out.health_after.initial_health == 500 * USD
    assert acct.quote == 1_000 * USD and not acct.positions
    too_big = simulate_fill_side(acct, params, prices, 0, BTC, fill_cash(BTC, 50_000 * PX), 0)
    assert not too_big.accepted


def test_config_validation() -> None:
    BTC_MARKET.validate()
    MarketConfig(1, 1, 1, 1, 1, (Tier(10, 1, 1), Tier(20, 2, 2))).validate()
    # the last cap is ignored (unbounded), like the contract's _writeMarket
    MarketConfig(1, 1, 1, 1, 1, (Tier(10, 1, 1), Tier(0, 2, 2))).validate()
    MarketConfig(1, 1, 1, 1, 1, (Tier(0, 1, 1),)).validate()
    PARAMS.validate()
    bad_tiers = [
        (Tier(10, 100_000, 200_000),),  # maint > init
        (Tier(10, 100_000, 0),),  # maint must be > 0
        (Tier(10, 200_000, 100_000), Tier(10, 300_000, 100_000), Tier(0, 300_000, 100_000)),
        (Tier(0, 200_000, 100_000), Tier(10, 300_000, 100_000)),  # first cap must be > 0
        (Tier(10, 200_000, 100_000), Tier(20, 100_000, 100_000)),  # init decreasing
        (Tier(10, 2 * PPM, 100_000),),  # init > PPM
        (),
        tuple(Tier(i + 1, 1, 1) for i in range(5)),  # more than 4 tiers
    ]
    for tiers in bad_tiers:
        with pytest.raises(ConfigError):
            MarketConfig(1, 1, 1, 1, 1, tiers).validate()
    with pytest.raises(ConfigError):
        CollateralConfig(18, 1, 900_000, 800_000, 0).validate()  # init weight > maint
    with pytest.raises(ConfigError):
        RiskParams({}, {}, PPM + 1).validate()
    with pytest.raises(ConfigError):
        RiskParams({0: CollateralConfig(18, 0, PPM, PPM, 0)}, {}, 0).validate()


def test_last_tier_cap_is_unbounded() -> None:
    assert BTC_MARKET.bands[-1][0] + BTC_MARKET.bands[-1][1] == UINT256_MAX
    huge = 10**30
    assert requirements(huge, BTC_MARKET)[0] == requirement(huge, TIERS, "init")
    assert requirement(huge, TIERS, "init") == (100_000 + 800_000) * USD + (huge - 5 * 10**12) // 2
    # a last tier configured with a finite cap still applies beyond it
    capped = (Tier(10, 100_000, 50_000), Tier(20, 200_000, 100_000))
    assert requirement(1_000, capped, "init") == 1 + ceil_div(990 * 200_000, PPM)


def test_subaccount_copy_is_deep() -> None:
    acct = _example_account()
    clone = acct.copy()
    clone.positions[0].size = 0
    clone.collateral[1] = 0
    clone.quote = 0
    assert acct.positions[0].size == BTC and acct.collateral[1] == 2 * 10**18
    assert acct.quote == 10_000 * USD
