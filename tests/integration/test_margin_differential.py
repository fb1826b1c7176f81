"""Differential test: the contract's health view equals crossbook.margin to the last unit.

1,000+ random portfolios (several markets and collateral assets, long and short, profit and loss,
accrued funding both ways, notionals on and around tier boundaries, extreme sizes) are written into
a ClearinghouseHarness on a real anvil node and read back through `health()` via eth_call.
"""
from __future__ import annotations

import random
from typing import Iterator

import pytest
from web3 import Web3

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import DEFAULT_SPEC, risk_params
from crossbook.fixedpoint import NOTIONAL_DIV
from crossbook.margin import Position, Prices, SubAccount, compute_health

PORTFOLIOS = 1_000
PRICE_SCENARIOS = 20
# On-chain storage ranges (docs/protocol.md §7): size int80, open notional int88.
MAX_SIZE = 2**79 - 1
MAX_OPEN_NOTIONAL = 2**86


@pytest.fixture(scope="module")
def harness(harness_node: AnvilNode) -> Iterator[LocalExchange]:
    ex = LocalExchange(harness_node, harness=True)
    snap = ex.snapshot()
    yield ex
    ex.revert(snap)


def _tier_boundary_size(rng: random.Random, market: int, price: int) -> int:
    """A size whose notional lands on, just below or just above one of the market's tier caps."""
    tiers = DEFAULT_SPEC.markets[market].tiers
    cap = rng.choice([t.notional_cap for t in tiers[:-1]] or [tiers[0].notional_cap])
    size = cap * NOTIONAL_DIV // price + rng.choice([-1, 0, 1])
    return max(size, 1)


def _random_size(rng: random.Random, market: int, price: int) -> int:
    kind = rng.random()
    if kind < 0.25:
        size = _tier_boundary_size(rng, market, price)
    elif kind < 0.35:
        # extreme: as large as storage allows at up to 1.5x the price (the entry range below)
        size = rng.randint(1, min(MAX_SIZE, MAX_OPEN_NOTIONAL * NOTIONAL_DIV // (price * 3 // 2)))
    elif kind < 0.45:
        size = rng.randint(1, 1000)  # dust: rounding dominates
    else:
        size = rng.randint(1, 10**12)
    return size if rng.random() < 0.5 else -size


def _random_portfolio(rng: random.Random, prices: Prices) -> SubAccount:
    acct = SubAccount(quote=rng.choice([0, rng.randint(-10**14, 10**14), rng.randint(-10**3, 10**3)]))
    for asset in range(1, len(DEFAULT_SPEC.collaterals) + 1):
        if rng.random() < 0.6:
            decimals = DEFAULT_SPEC.collaterals[asset - 1].decimals
            acct.collateral[asset] = rng.choice([rng.randint(1, 10**decimals), rng.randint(1, 10**(decimals + 6)),
                                                 rng.randint(1, 99)])
    for market in range(len(DEFAULT_SPEC.markets)):
        if rng.random() < 0.7:
            price = prices.markets[market]
            size = _random_size(rng, market, price)
            entry = price * rng.randint(50, 150) // 100
            open_notional = size * entry // NOTIONAL_DIV
            snapshot = prices.funding[market] - rng.randint(-10**9, 10**9)
            acct.positions[market] = Position(size, open_notional, snapshot)
    return acct


def _random_prices(rng: random.Random) -> Prices:
    feed_prices = {
        f.feed_id: max(f.min_price, min(f.max_price, f.initial_price * rng.randint(20, 300) // 100 + rng.randint(0, 99)))
        for f in DEFAULT_SPEC.feeds
    }
    assets = {i + 1: feed_prices[c.feed_id] for i, c in enumerate(DEFAULT_SPEC.collaterals)}
    markets = {i: feed_prices[m.feed_id] for i, m in enumerate(DEFAULT_SPEC.markets)}
    funding = {i: rng.randint(-10**12, 10**12) for i in markets}
    return Prices(assets=assets, markets=markets, funding=funding)


def _write(ex: LocalExchange, owner: str, sub: int, acct: SubAccount) -> bytes:
    fn = ex.client.contract.functions.harnessSetPortfolio(
        owner, sub, acct.quote,
        list(acct.collateral), list(acct.collateral.values()),
        list(acct.positions), [p.size for p in acct.positions.values()],
        [p.open_notional for p in acct.positions.values()],
        [p.funding_snapshot for p in acct.positions.values()],
    )
    tx = {"to": fn.address, "data": fn._encode_transaction_data(), "gas": 1_500_000}
    return ex.admin.submit(tx)


def test_contract_health_equals_python_on_random_portfolios(harness: LocalExchange) -> None:
    ex = harness
    rng = random.Random(20261124)
    params = risk_params()
    owner = Web3.to_checksum_address("0x" + "ab" * 20)
    checked = 0
    for scenario in range(PRICE_SCENARIOS):
        prices = _random_prices(rng)
        for f in DEFAULT_SPEC.feeds:
            ex.set_price(f.symbol, next(prices.markets[i] for i, m in enumerate(DEFAULT_SPEC.markets)
                                        if m.feed_id == f.feed_id))
        for market, index in prices.funding.items():
            ex.admin.transact(ex.client.contract.functions.harnessSetCumulativeFunding(market, index))
        assert ex.client.prices() == prices
        portfolios = [_random_portfolio(rng, prices) for _ in range(PORTFOLIOS // PRICE_SCENARIOS)]
        hashes = [_write(ex, owner, scenario * 1000 + i, a) for i, a in enumerate(portfolios)]
        for h in hashes:
            ex.admin.wait(h)
        for i, acct in enumerate(portfolios):
            sub = scenario * 1000 + i
            assert ex.client.subaccount(owner, sub) == acct, "harness stored a different portfolio"
            expected = compute_health(acct, params, prices.assets, prices.markets, prices.funding)
            assert ex.client.health(owner, sub) == expected, f"portfolio {acct} at {prices}"
            checked += 1
    assert checked >= 1_000


def test_differential_covers_edge_cases(harness: LocalExchange) -> None:
    """Hand-picked portfolios: empty, only debt, exactly on each tier cap, opposite signs."""
    ex = harness
    params = risk_params()
    prices = ex.client.prices()
    owner = Web3.to_checksum_address("0x" + "cd" * 20)
    eth_px = prices.markets[0]
    caps = [t.notional_cap for t in DEFAULT_SPEC.markets[0].tiers[:-1]]
    cases = [
        SubAccount(),
        SubAccount(quote=-5),
        SubAccount(quote=10**6, collateral={1: 1}),
        *[SubAccount(quote=10**12, positions={0: Position(c * NOTIONAL_DIV // eth_px + d, 0, 0)})
          for c in caps for d in (-1, 0, 1)],
        SubAccount(quote=0, positions={0: Position(-(10**10), -(10**10) * eth_px // NOTIONAL_DIV, 0),
                                       1: Position(10**9, 0, prices.funding[1] + 12345)}),
    ]
    for i, acct in enumerate(cases):
        ex.admin.wait(_write(ex, owner, i, acct))
        expected = compute_health(acct, params, prices.assets, prices.markets, prices.funding)
        assert ex.client.health(owner, i) == expected, f"case {i}: {acct}"
