"""Differential test: the contract's `liquidate` equals crossbook.liquidation to the last unit.

Random liquidatable portfolios (several markets, long and short, accrued funding, notionals across tier
boundaries, sizes off the lot grid, critical and merely-underwater accounts) are written into a
ClearinghouseHarness on a real anvil node. For each, `liquidate` is eth_called (size, price) and then
sent as a real transaction; the event (penalty, insurance share), both accounts' resulting state and the
insurance fund are compared with the Python mirror.
"""
from __future__ import annotations

import random
from typing import Iterator

import pytest
from web3 import Web3

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.errors import ContractRevert
from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import DEFAULT_SPEC, risk_params
from crossbook.fixedpoint import NOTIONAL_DIV
from crossbook.liquidation import (
    DEFAULT_LIQUIDATION_PARAMS,
    NotLiquidatable,
    apply_liquidation,
    quote_liquidation,
    restores,
)
from crossbook.margin import Position, Prices, SubAccount, compute_health_at

CASES = 160
UINT64_MAX = 2**64 - 1


@pytest.fixture(scope="module")
def harness(harness_node: AnvilNode) -> Iterator[LocalExchange]:
    ex = LocalExchange(harness_node, harness=True)
    snap = ex.snapshot()
    yield ex
    ex.revert(snap)


def _write(ex: LocalExchange, owner: str, sub: int, acct: SubAccount) -> None:
    fn = ex.client.contract.functions.harnessSetPortfolio(
        owner, sub, acct.quote,
        list(acct.collateral), list(acct.collateral.values()),
        list(acct.positions), [p.size for p in acct.positions.values()],
        [p.open_notional for p in acct.positions.values()],
        [p.funding_snapshot for p in acct.positions.values()],
    )
    ex.admin.transact(fn, gas=1_500_000)


def _random_target(rng: random.Random, prices: Prices) -> SubAccount:
    """A portfolio whose quote is then tuned so that maintenance health is negative."""
    acct = SubAccount()
    if rng.random() < 0.4:
        acct.collateral[1] = rng.randint(1, 50 * 10**18)
    for market in range(len(DEFAULT_SPEC.markets)):
        if market == 0 or rng.random() < 0.5:
            price = prices.markets[market]
            tiers = DEFAULT_SPEC.markets[market].tiers
            notional = rng.choice([rng.randint(10**9, 10**12), tiers[0].notional_cap * rng.randint(90, 110) // 100,
                                   rng.randint(10**12, 3 * 10**13)])
            size = max(1, notional * NOTIONAL_DIV // price + rng.randint(-99, 99))
            size = size if rng.random() < 0.5 else -size
            entry = price * rng.randint(80, 120) // 100
            snapshot = prices.funding[market] - rng.randint(-10**8, 10**8)
            acct.positions[market] = Position(size, size * entry // NOTIONAL_DIV, snapshot)
    return acct


def _make_liquidatable(rng: random.Random, acct: SubAccount, prices: Prices) -> None:
    params = risk_params()
    h = compute_health_at(acct, params, prices)
    r = h.maintenance_requirement
    # target maintenance health in [-R, -1] (deep ones are tier 2 / bankrupt), sometimes barely negative
    target = rng.choice([-1, -rng.randint(1, max(1, r // 50)), -rng.randint(1, max(1, r))])
    acct.quote += target - h.maintenance_health


def test_liquidate_equals_python_on_random_portfolios(harness: LocalExchange) -> None:
    ex = harness
    rng = random.Random(20261125)
    risk = risk_params()
    lp = DEFAULT_LIQUIDATION_PARAMS
    assert ex.client.liquidation_params() == (lp.penalty_ppm, lp.insurance_share_ppm, lp.buffer_ppm, lp.critical_ppm)
    for market, index in enumerate([12_345_678, -9_876_543, 55_555]):
        ex.admin.transact(ex.client.contract.functions.harnessSetCumulativeFunding(market, index))
    prices = ex.client.prices()
    owner = Web3.to_checksum_address("0x" + "ee" * 20)
    liq = ex.admin.address
    compared = partial = full = 0
    for case in range(CASES):
        target = _random_target(rng, prices)
        _make_liquidatable(rng, target, prices)
        liq_acct = SubAccount(quote=10**15)
        if rng.random() < 0.3:  # the liquidator may already hold the market
            liq_acct.positions[0] = Position(rng.choice([-1, 1]) * 10**8, 0, prices.funding[0])
        _write(ex, owner, case, target)
        _write(ex, liq, 10_000 + case, liq_acct)
        market = rng.choice(list(target.positions))
        max_size = rng.choice([UINT64_MAX, UINT64_MAX, abs(target.positions[market].size) // 3 + 1])
        h = ex.client.health(owner, case)
        assert h == compute_health_at(target, risk, prices)
        assert h.maintenance_health < 0
        try:
            q = quote_liquidation(target, risk, prices, market, max_size, lp)
        except NotLiquidatable as err:
            with pytest.raises(ContractRevert) as rev:
                ex.client.call_liquidate(liq, owner, case, market, max_size, UINT64_MAX if
                                         target.positions[market].size > 0 else 0, 10_000 + case)
            assert rev.value.name == str(err)
            continue
        limit = UINT64_MAX if q.size_delta < 0 else 0
        assert ex.client.call_liquidate(liq, owner, case, market, max_size, limit, 10_000 + case) == (q.size, q.price)
        fund_before = ex.client.insurance_fund()
        receipt = ex.client.liquidate(ex.admin, owner, case, market, max_size, limit, 10_000 + case)
        (ev,) = ex.client.liquidated_in(receipt)
        assert (ev.size_delta, ev.price, ev.penalty, ev.insurance_share) == (
            q.size_delta, q.price, q.penalty, q.insurance_share)
        apply_liquidation(target, liq_acct, market, q, prices.funding[market])
        assert ex.client.subaccount(owner, case) == target
        assert ex.client.subaccount(liq, 10_000 + case) == liq_acct
        assert ex.client.insurance_fund() == fund_before + q.insurance_share
        after = ex.client.health(owner, case)
        assert after == compute_health_at(target, risk, prices)
        if q.critical or q.size == abs(q.size_delta) and max_size < UINT64_MAX:
            full += 1
        else:
            partial += 1
            still_open = target.positions.get(market)
            if still_open is not None and max_size == UINT64_MAX:
                # tier 1 restored the buffered maintenance health with this size
                assert after.maintenance_health * 1_000_000 >= after.maintenance_requirement * lp.buffer_ppm
        compared += 1
    assert compared >= CASES * 3 // 4
    assert partial > 10 and full > 5, (partial, full)


def test_restoring_size_is_minimal_within_one_lot(harness: LocalExchange) -> None:
    """Python-only property on the same generator: the tier-1 size restores the buffered health and is at
    most one lot above the smallest lot multiple that does (found by bisection)."""
    rng = random.Random(7)
    risk = risk_params()
    prices = harness.client.prices()
    checked = 0
    for _ in range(300):
        target = _random_target(rng, prices)
        _make_liquidatable(rng, target, prices)
        market = rng.choice(list(target.positions))
        try:
            q = quote_liquidation(target, risk, prices, market, UINT64_MAX)
        except NotLiquidatable:
            continue
        lot = risk.markets[market].lot_size
        pos = target.positions[market]
        if q.critical or q.size >= abs(pos.size) or q.size <= lot:
            continue
        from crossbook.liquidation import _Target  # the predicate's input, as quote_liquidation builds it

        h = compute_health_at(target, risk, prices)
        t = _Target(pos.size, prices.markets[market], q.price, DEFAULT_LIQUIDATION_PARAMS.insurance_rate_ppm,
                    h.equity, h.maintenance_requirement, DEFAULT_LIQUIDATION_PARAMS.buffer_ppm, risk.markets[market])
        assert restores(t, q.size)
        lo, hi = 0, q.size // lot
        while lo < hi:
            mid = (lo + hi) // 2
            if restores(t, mid * lot):
                hi = mid
            else:
                lo = mid + 1
        assert q.size // lot - lo <= 1
        checked += 1
    assert checked > 20
