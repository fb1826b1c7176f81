"""The vectorised scan gives exactly compute_health's liquidatable set and exact healths."""
from __future__ import annotations

import random

import numpy as np
import pytest

from crossbook.config import risk_params
from crossbook.margin import (
    CollateralConfig, MarketConfig, Position, RiskParams, SubAccount, Tier, compute_health,
)
from keeper.health_scan import HealthBook

INT80 = 2**79 - 1
INT88 = 2**87 - 1
INT128 = 2**127 - 1


def _random_params(rng: random.Random, markets: int = 8, assets: int = 3) -> RiskParams:
    mk = {}
    for m in range(markets):
        n = rng.randint(1, 4)
        caps = sorted(rng.sample(range(1, 10**9), n))
        mmf = sorted(rng.randint(1, 500_000) for _ in range(n))
        tiers = tuple(Tier(caps[i] * 10**rng.randint(0, 6), min(PPMv, mmf[i] * 2), mmf[i]) for i in range(n))
        # caps must strictly increase after scaling
        fixed, prev = [], 0
        for t in tiers:
            cap = max(t.notional_cap, prev + 1)
            fixed.append(Tier(cap, t.imf_ppm, t.mmf_ppm))
            prev = cap
        mk[m] = MarketConfig(m, 1, 1, 10**30, 1000, tuple(fixed))
    col = {a: CollateralConfig(rng.choice([0, 2, 6, 8, 18, 24, 30]), 10 + a, rng.randint(0, 900_000),
                               1_000_000 if a == 1 else rng.randint(900_000, 1_000_000), 10**40)
           for a in range(1, assets + 1)}
    return RiskParams(collaterals=col, markets=mk, pnl_haircut_ppm=200_000)


PPMv = 1_000_000


def _mag(rng: random.Random, top: int) -> int:
    """Log-uniform magnitude in [0, top]: small, realistic and extreme values all appear."""
    return min(top, rng.randrange(1 << rng.randint(0, top.bit_length())))


def _random_account(rng: random.Random, params: RiskParams, extreme: bool) -> SubAccount:
    acct = SubAccount(quote=rng.choice([-1, 1]) * (_mag(rng, INT128) if extreme else rng.randrange(10**14)))
    for m in params.markets:
        if rng.random() < 0.5:
            size = rng.choice([-1, 1]) * (_mag(rng, INT80) if extreme else rng.randrange(1, 10**13))
            snap = rng.choice([-1, 1]) * (_mag(rng, INT88) if extreme else rng.randrange(10**12))
            acct.positions[m] = Position(size, rng.randrange(-10**15, 10**15), snap)
    for a, cfg in params.collaterals.items():
        if rng.random() < 0.5:
            top = 2**200 if extreme else 10**(cfg.token_decimals + 5)
            acct.collateral[a] = _mag(rng, top)
    return acct


def _prices(rng: random.Random, params: RiskParams, extreme: bool) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    def p() -> int:
        return _mag(rng, 2**64 - 1) if extreme else rng.randrange(10**6, 10**13)
    assets = {a: p() for a in params.collaterals}
    markets = {m: p() for m in params.markets}
    funding = {m: rng.choice([-1, 1]) * (_mag(rng, INT88) if extreme else rng.randrange(10**12)) for m in params.markets}
    return assets, markets, funding


def _pin_near_zero(acct: SubAccount, params: RiskParams, ap: dict[int, int], mp: dict[int, int],
                   fu: dict[int, int], target: int) -> None:
    """Shift quote so maintenance health equals `target` exactly (boundary cases)."""
    h = compute_health(acct, params, ap, mp, fu)
    acct.quote += target - h.maintenance_health


def _check(book: HealthBook, params: RiskParams, ap: dict[int, int], mp: dict[int, int], fu: dict[int, int]) -> int:
    res = book.scan(ap, mp)
    want_liq = []
    for row, acct in enumerate(book.accounts):
        h = compute_health(acct, params, ap, mp, fu)
        if h.maintenance_health < 0:
            want_liq.append((h.maintenance_health, row))
        if row in res.exact:
            assert res.exact[row] == h
        else:
            lo, hi = res.bounds(row)
            assert lo <= h.maintenance_health <= hi, (row, lo, hi, h)
            assert lo >= 0
            if not any(acct.collateral.values()):
                assert lo == h.maintenance_health  # no collateral: the screen is exact
        assert res.is_liquidatable(row) == (h.maintenance_health < 0)
    assert res.liquidatable == [r for _, r in sorted(want_liq)]
    return len(want_liq)


@pytest.mark.parametrize("seed", range(6))
def test_random_realistic_portfolios_exact(seed: int) -> None:
    rng = random.Random(seed)
    params = _random_params(rng)
    ap, mp, fu = _prices(rng, params, extreme=False)
    book = HealthBook(params, fu, capacity=4)
    for i in range(1500):
        acct = _random_account(rng, params, extreme=False)
        if i % 3 == 0:
            _pin_near_zero(acct, params, ap, mp, fu, rng.randint(-3, 3))
        book.set_account(i, acct)
    liq = _check(book, params, ap, mp, fu)
    assert liq > 0
    # only liquidatable and near-zero (pinned) accounts need the exact check
    res = book.scan(ap, mp)
    assert res.out_of_domain == 0
    assert res.n_exact <= len(res.liquidatable) + 500


@pytest.mark.parametrize("seed", range(6))
def test_random_extreme_portfolios_exact(seed: int) -> None:
    rng = random.Random(1000 + seed)
    params = _random_params(rng)
    ap, mp, fu = _prices(rng, params, extreme=True)
    book = HealthBook(params, fu)
    for i in range(800):
        acct = _random_account(rng, params, extreme=rng.random() < 0.7)
        if i % 4 == 0:
            _pin_near_zero(acct, params, ap, mp, fu, rng.randint(-2, 2))
        book.set_account(i, acct)
    _check(book, params, ap, mp, fu)


def test_hand_picked_edges() -> None:
    params = risk_params()
    fu = {0: 0, 1: 0, 2: 0}
    ap = {1: 3_000 * 10**8, 2: 60_000 * 10**8}
    mp = {0: 3_000 * 10**8 + 1, 1: 60_000 * 10**8 - 7, 2: 150 * 10**8}
    cases = [
        SubAccount(),
        SubAccount(quote=-1),
        SubAccount(quote=-(2**127)),
        SubAccount(quote=2**127 - 1, positions={0: Position(-(2**79), 0, 0)}),
        SubAccount(quote=0, positions={0: Position(1, 0, 0)}),  # PV 0, notional rounds up to 1
        SubAccount(quote=0, positions={0: Position(-1, 0, 0)}),
        SubAccount(quote=-1, collateral={1: 10**18 - 1}),
        SubAccount(quote=0, collateral={1: 2**255}),
        SubAccount(quote=-(10**12), collateral={1: 10**18 + 1, 2: 12345}, positions={1: Position(-99_999, 5, -3)}),
    ]
    book = HealthBook(params, fu)
    for i, c in enumerate(cases):
        book.set_account(i, c)
    # a near-zero account pinned exactly to -1 and 0
    for t, key in ((-1, "m1"), (0, "z")):
        acct = SubAccount(quote=10**9, collateral={1: 3 * 10**18 + 7}, positions={0: Position(7 * 10**8 + 3, 0, 0), 1: Position(-3 * 10**7, 0, 5)})
        _pin_near_zero(acct, params, ap, mp, fu, t)
        book.set_account(key, acct)
    _check(book, params, ap, mp, fu)
    # missing price: reported as unpriced, never as liquidatable
    res = book.scan({1: ap[1]}, mp)
    assert book.row_of[8] in res.unpriced


def test_funding_update_and_row_replace() -> None:
    params = risk_params()
    rng = random.Random(7)
    book = HealthBook(params, {0: 0, 1: 0, 2: 0})
    ap = {1: 3_000 * 10**8, 2: 60_000 * 10**8}
    mp = {0: 3_000 * 10**8, 1: 60_000 * 10**8, 2: 150 * 10**8}
    for i in range(300):
        book.set_account(i, _random_account(rng, params, extreme=False))
    fu = {0: 10**9, 1: -(10**11), 2: 5}
    book.set_funding(fu)
    _check(book, params, ap, mp, fu)
    book.set_account(5, SubAccount(quote=-5))
    assert book.scan(ap, mp).is_liquidatable(5)
    assert len(book) == 300


def test_scan_is_vectorised_fast_enough() -> None:
    """Smoke check on size: 20k rows scan well under a second (the bench measures 100k)."""
    params = risk_params()
    book = HealthBook(params, {0: 0, 1: 0, 2: 0}, capacity=20_000)
    rng = random.Random(3)
    for i in range(20_000):
        book.set_account(i, _random_account(rng, params, extreme=False))
    res = book.scan({1: 3 * 10**11, 2: 6 * 10**12}, {0: 3 * 10**11, 1: 6 * 10**12, 2: 1.5e10.__int__()})
    assert isinstance(res.lo, np.ndarray) and res.lo.dtype == np.int64
