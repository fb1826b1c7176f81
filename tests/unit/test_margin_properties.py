"""Property tests of the margin model (hypothesis)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from crossbook.fixedpoint import NOTIONAL_DIV, PPM, UINT256_MAX, ceil_div
from crossbook.margin import (
    CollateralConfig,
    Health,
    MarketConfig,
    Position,
    RiskParams,
    SubAccount,
    Tier,
    accrued_funding,
    apply_fill_side,
    collateral_value,
    compute_health,
    fee_amount,
    fill_cash,
    position_notional,
    position_value,
    requirement,
    requirements,
    weighted_value,
)

MAX_SIZE = 10**15  # 10 million base units
MAX_PRICE = 10**14  # 1 million quote per base unit
MAX_INDEX = 10**13


@st.composite
def tiers_st(draw: st.DrawFn) -> tuple[Tier, ...]:
    n = draw(st.integers(1, 4))
    caps = sorted(draw(st.sets(st.integers(1, 10**16), min_size=n, max_size=n)))
    caps[-1] = UINT256_MAX
    mmfs = sorted(draw(st.lists(st.integers(1, PPM), min_size=n, max_size=n)))
    extra = sorted(draw(st.lists(st.integers(0, PPM), min_size=n, max_size=n)))
    # imf_i = max(mmf_i, extra_i): both sequences sorted so imf stays non-decreasing
    return tuple(Tier(c, max(m, e), m) for c, m, e in zip(caps, mmfs, extra))


@st.composite
def market_st(draw: st.DrawFn) -> MarketConfig:
    market = MarketConfig(1, 1, 1, 10**18, 10_000, draw(tiers_st()))
    market.validate()
    return market


@st.composite
def collateral_st(draw: st.DrawFn) -> CollateralConfig:
    w_maint = draw(st.integers(0, PPM))
    cfg = CollateralConfig(draw(st.integers(0, 24)), 1, draw(st.integers(0, w_maint)), w_maint,
                           10**40)
    cfg.validate()
    return cfg


@st.composite
def world_st(draw: st.DrawFn) -> tuple[SubAccount, RiskParams, dict[int, int], dict[int, int],
                                       dict[int, int]]:
    market_ids = draw(st.sets(st.integers(0, 31), max_size=4))
    asset_ids = draw(st.sets(st.integers(1, 15), max_size=3))
    params = RiskParams(
        collaterals={a: draw(collateral_st()) for a in asset_ids},
        markets={m: draw(market_st()) for m in market_ids},
        pnl_haircut_ppm=draw(st.integers(0, PPM)),
    )
    params.validate()
    account = SubAccount(
        quote=draw(st.integers(-(10**15), 10**15)),
        collateral={a: draw(st.integers(0, 10**30)) for a in asset_ids},
        positions={
            m: Position(draw(st.integers(-MAX_SIZE, MAX_SIZE)),
                        draw(st.integers(-(10**15), 10**15)),
                        draw(st.integers(-MAX_INDEX, MAX_INDEX)))
            for m in market_ids
        },
    )
    asset_prices = {a: draw(st.integers(1, MAX_PRICE)) for a in asset_ids}
    market_prices = {m: draw(st.integers(1, MAX_PRICE)) for m in market_ids}
    funding = {m: draw(st.integers(-MAX_INDEX, MAX_INDEX)) for m in market_ids}
    return account, params, asset_prices, market_prices, funding


def reference_health(account: SubAccount, params: RiskParams, ap: dict[int, int],
                     mp: dict[int, int], fi: dict[int, int]) -> Health:
    """Section 3 written term by term with the reference helpers."""
    w_init = w_maint = 0
    for a, amount in account.collateral.items():
        cfg = params.collaterals[a]
        v = collateral_value(amount, ap[a], cfg)
        w_init += weighted_value(v, cfg.weight_init_ppm)
        w_maint += weighted_value(v, cfg.weight_maint_ppm)
    pv_sum = a_sum = gains = r_init = r_maint = 0
    for m, pos in account.positions.items():
        if pos.size == 0:
            continue
        pv = position_value(pos.size, mp[m])
        pv_sum += pv
        a_sum += accrued_funding(pos.size, fi[m], pos.funding_snapshot)
        gains += max(pv - pos.open_notional, 0)
        n = position_notional(pos.size, mp[m])
        r_init += requirement(n, params.markets[m].tiers, "init")
        r_maint += requirement(n, params.markets[m].tiers, "maint")
    e = account.quote + pv_sum - a_sum + w_maint
    e_im = account.quote + pv_sum - a_sum + w_init - ceil_div(gains * params.pnl_haircut_ppm, PPM)
    return Health(e, e_im, r_init, r_maint, e_im - r_init, e - r_maint)


@given(world_st())
def test_compute_health_matches_reference(world: tuple) -> None:  # type: ignore[type-arg]
    assert compute_health(*world) == reference_health(*world)


@given(tiers_st(), st.integers(0, 10**17))
def test_requirement_continuous_and_non_decreasing(tiers: tuple[Tier, ...], n: int) -> None:
    for which in ("init", "maint"):
        r0 = requirement(n, tiers, which)  # type: ignore[arg-type]
        r1 = requirement(n + 1, tiers, which)  # type: ignore[arg-type]
        # one more atom of notional adds at most one atom of requirement (ceil per tier)
        assert 0 <= r1 - r0 <= 1


@given(tiers_st(), st.integers(0, 10**17))
def test_requirement_close_to_exact_marginal_value(tiers: tuple[Tier, ...], n: int) -> None:
    exact = Fraction(0)
    lo = 0
    for i, t in enumerate(tiers):
        hi = n if i == len(tiers) - 1 else min(n, t.notional_cap)
        exact += Fraction(max(hi - lo, 0) * t.imf_ppm, PPM)
        lo = t.notional_cap
    r = requirement(n, tiers, "init")
    assert exact <= r < exact + len(tiers)


@given(market_st(), st.integers(0, 10**17))
def test_maintenance_at_most_initial(market: MarketConfig, n: int) -> None:
    r_init, r_maint = requirements(n, market)
    assert 0 <= r_maint <= r_init
    assert r_init == requirement(n, market.tiers, "init")


@given(world_st(), st.integers(-(10**12), 10**12))
def test_health_moves_one_for_one_with_quote(world: tuple, k: int) -> None:  # type: ignore[type-arg]
    account, params, ap, mp, fi = world
    before = compute_health(account, params, ap, mp, fi)
    account.quote += k
    after = compute_health(account, params, ap, mp, fi)
    assert after.initial_health - before.initial_health == k
    assert after.maintenance_health - before.maintenance_health == k
    assert after.equity - before.equity == k


@st.composite
def trader_st(draw: st.DrawFn) -> SubAccount:
    return SubAccount(
        quote=draw(st.integers(-(10**15), 10**15)),
        positions={0: Position(draw(st.integers(-MAX_SIZE, MAX_SIZE)),
                               draw(st.integers(-(10**15), 10**15)),
                               draw(st.integers(-MAX_INDEX, MAX_INDEX)))},
    )


@given(st.data())
def test_trade_is_zero_sum(data: st.DataObject) -> None:
    buyer, seller = data.draw(trader_st()), data.draw(trader_st())
    size = data.draw(st.integers(1, MAX_SIZE))
    price = data.draw(st.integers(1, MAX_PRICE))
    index = data.draw(st.integers(-MAX_INDEX, MAX_INDEX))
    cash = fill_cash(size, price)
    fee_b = fee_amount(cash, data.draw(st.integers(0, 10_000)))
    fee_s = fee_amount(cash, data.draw(st.integers(0, 10_000)))
    quote_before = buyer.quote + seller.quote
    size_before = buyer.positions[0].size + seller.positions[0].size
    funding_balance = apply_fill_side(buyer, 0, size, cash, fee_b, index)
    funding_balance += apply_fill_side(seller, 0, -size, -cash, fee_s, index)
    fee_pool = fee_b + fee_s
    assert buyer.quote + seller.quote + fee_pool + funding_balance == quote_before
    assert buyer.positions[0].size + seller.positions[0].size == size_before
    assert buyer.positions[0].funding_snapshot == seller.positions[0].funding_snapshot == index


@given(st.integers(0, MAX_SIZE), st.integers(-MAX_INDEX, MAX_INDEX),
       st.integers(-MAX_INDEX, MAX_INDEX))
def test_equal_long_and_short_funding_differ_by_dust(size: int, index: int, snap: int) -> None:
    owed_by_long = accrued_funding(size, index, snap)
    owed_by_short = accrued_funding(-size, index, snap)
    exact = Fraction(size * (index - snap), NOTIONAL_DIV)
    # each side is rounded against itself by less than one atom
    assert 0 <= owed_by_long - exact < 1
    assert 0 <= owed_by_short + exact < 1
    assert owed_by_long + owed_by_short in (0, 1)
    assert (owed_by_long + owed_by_short == 0) == (exact.denominator == 1)


@given(st.data())
def test_closing_at_oracle_costs_fee_plus_rounding(data: st.DataObject) -> None:
    market = data.draw(market_st())
    params = RiskParams({}, {0: market}, data.draw(st.integers(0, PPM)))
    account = data.draw(trader_st())
    size = account.positions[0].size
    snap = account.positions[0].funding_snapshot
    price = data.draw(st.integers(1, MAX_PRICE))
    index = data.draw(st.integers(-MAX_INDEX, MAX_INDEX))
    fee_ppm = data.draw(st.integers(0, 10_000))
    if size == 0:
        return
    before = compute_health(account, params, {}, {0: price}, {0: index})
    quote_before = account.quote
    cash = fill_cash(abs(size), price)
    fee = fee_amount(cash, fee_ppm)
    signed_cash = -cash if size > 0 else cash
    realized = apply_fill_side(account, 0, -size, signed_cash, fee, index)
    after = compute_health(account, params, {}, {0: price}, {0: index})
    assert realized == accrued_funding(size, index, snap)
    assert account.quote - quote_before == -signed_cash - fee - realized
    assert account.positions[0].size == 0 and account.positions[0].open_notional == 0
    assert after.initial_requirement == after.maintenance_requirement == 0
    # funding was already inside equity, so closing costs the fee; a short's mark value is
    # floored while its buy-back cash is floored too, which hands back < 1 atom of rounding
    dust = after.equity - before.equity + fee
    if size > 0 or (abs(size) * price) % NOTIONAL_DIV == 0:
        assert dust == 0
    else:
        assert dust == 1
    assert after.equity == after.initial_equity == after.maintenance_health


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


@settings(max_examples=300)
@given(st.integers(-MAX_SIZE, MAX_SIZE), st.integers(-(10**15), 10**15),
       st.integers(-MAX_SIZE, MAX_SIZE).filter(bool), st.integers(1, MAX_PRICE))
def test_open_notional_invariants(size: int, basis: int, delta: int, price: int) -> None:
    # a basis consistent with the position: same sign as size, 0 when flat
    basis = abs(basis) * _sign(size)
    account = SubAccount(positions={0: Position(size, basis, 0)})
    cash = fill_cash(abs(delta), price)
    signed_cash = cash if delta > 0 else -cash
    apply_fill_side(account, 0, delta, signed_cash, 0, 0)
    pos = account.positions[0]
    assert pos.size == size + delta
    if pos.size == 0:
        assert pos.open_notional == 0
    elif size != 0 and _sign(size) != _sign(delta) and abs(delta) <= abs(size):
        # reduce: sign kept (or 0 through rounding), magnitude never grows
        assert _sign(pos.open_notional) in (0, _sign(size))
        assert abs(pos.open_notional) <= abs(basis)
    else:
        # open, add or flip: the basis follows the new position's side
        assert _sign(pos.open_notional) in (0, _sign(pos.size))
        if size == 0 or _sign(size) == _sign(delta):
            assert pos.open_notional == basis + signed_cash
