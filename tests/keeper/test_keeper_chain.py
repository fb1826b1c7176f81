"""On anvil with the real contracts: the index from real events, the liquidator's ranking and
confirmation against the contract's views, the feeder pushing a scenario on-chain."""
from __future__ import annotations

import pytest

from crossbook.chain.devkeys import ADMIN, KEEPER, dev_address, dev_key
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import PRICE, SIZE, USD, risk_params
from keeper.index import SubAccountIndex, accounts_in_batch
from keeper.liquidator import LOST_RACE, Liquidator, LiquidatorConfig, liquidation_available
from keeper.oracle_feeder import OracleFeeder, ScenarioPath
from settlement.relayer import connect

ETH, BTC = 0, 1
WHALE = user_signer(1)
A, B, C = user_signer(2), user_signer(3), user_signer(4)


def _setup(ex: LocalExchange) -> None:
    """A, B and C are long ETH with different leverage against a well-funded whale short."""
    ex.fund(WHALE.address, 0, "USDC", 10_000_000 * USD)
    ex.fund(A.address, 0, "USDC", 1_000 * USD)  # 3 ETH: thinnest margin
    ex.fund(B.address, 1, "USDC", 1_500 * USD)  # sub-account 1 on purpose
    ex.fund(C.address, 0, "USDC", 5_000 * USD)
    ex.fund(C.address, 0, "WETH", 10**18)
    px = 3_000 * PRICE
    items = []
    for who, sub in ((A, 0), (B, 1), (C, 0)):
        t = ex.order(who, ETH, True, px, 3 * SIZE, subaccount=sub)
        m = ex.order(WHALE, ETH, False, px, 3 * SIZE)
        items.append(ex.fill(t, m, 3 * SIZE, px))
    res = ex.settle(items)
    assert not res.rejected


def _index(ex: LocalExchange, start_block: int | None = None) -> SubAccountIndex:
    return SubAccountIndex(connect(ex.node.url), ex.node.url, ex.client.contract.address, risk_params(),
                           start_block=ex.deployment.start_block if start_block is None else start_block)


async def test_index_builds_from_events_and_matches_views(ex: LocalExchange) -> None:
    # the session deployment is shared with other tests: index only this test's events
    first_block = ex.w3.eth.block_number + 1
    _setup(ex)
    idx = _index(ex, first_block)
    try:
        n = await idx.sync()
        keys = {(WHALE.address, 0), (A.address, 0), (B.address, 1), (C.address, 0)}
        assert idx.known == keys and n == 4 and not idx.dirty
        for key in keys:
            assert idx.book.accounts[idx.book.row_of[key]] == ex.client.subaccount(*key)
        # a withdrawal is seen through its event; a fill through the batch calldata
        ex.settle([ex.withdrawal(C, 0, 100 * USD)])
        t = ex.order(A, ETH, False, 3_000 * PRICE, SIZE)
        m = ex.order(WHALE, ETH, True, 3_000 * PRICE, SIZE)
        ex.settle([ex.fill(t, m, SIZE, 3_000 * PRICE)])
        assert await idx.sync() == 3  # C, A and the whale re-read
        for key in keys:
            assert idx.book.accounts[idx.book.row_of[key]] == ex.client.subaccount(*key)
        assert await idx.sweep() == 4
    finally:
        await idx.close()


def test_accounts_in_batch_ignores_other_calldata() -> None:
    assert accounts_in_batch(b"\x12\x34\x56\x78") == set()


async def test_liquidator_ranks_by_shortfall_and_confirms(ex: LocalExchange) -> None:
    _setup(ex)
    # the keeper's own sub-account takes the positions over, so it needs margin (else the
    # contract answers LiquidatorUnhealthy and the keeper skips)
    ex.fund(dev_address(KEEPER), 0, "USDC", 100_000 * USD)
    idx = _index(ex)
    keeper = Liquidator(connect(ex.node.url), idx, ex.deployment.oracle, dev_key(KEEPER),
                        LiquidatorConfig(send=False))
    try:
        assert await keeper.tick() == []  # everyone healthy at 3000
        ex.set_price("ETH", 2_550 * PRICE)
        confirmed = await keeper.tick()
        healths = {k: ex.client.health(*k) for k in idx.known}
        want = sorted((h.maintenance_health, k) for k, h in healths.items() if h.maintenance_health < 0)
        assert [p.key for p in confirmed] == [k for _, k in want]
        assert [(A.address, 0), (B.address, 1)] == [p.key for p in confirmed]
        assert all(p.shortfall == -healths[p.key].maintenance_health for p in confirmed)
        assert all(p.kind == "liquidate" for p in confirmed)
        # A is below half its requirement (tier 2): the whole position, at the quoted price
        assert confirmed[0].market == ETH and confirmed[0].max_size == 3 * SIZE
        assert confirmed[0].quote is not None and confirmed[0].quote.critical
        assert confirmed[0].quote.price == 2_550 * PRICE * 990_000 // 1_000_000  # liquidator's 1%
        assert confirmed[0].price_limit > confirmed[0].quote.price  # liquidator buys the long: a ceiling
        # the eth_call agrees with the Python quote to the atom
        size, price = ex.client.call_liquidate(dev_address(KEEPER), A.address, 0, ETH, confirmed[0].max_size,
                                               confirmed[0].price_limit, 0)
        assert (size, price) == (confirmed[0].quote.size, confirmed[0].quote.price)
        # the price recovers before confirmation: the eth_call says not liquidatable -> lost race
        plans = keeper.rank(idx.book.scan(keeper.asset_prices, keeper.market_prices))
        ex.set_price("ETH", 3_000 * PRICE)
        assert not await keeper.confirm(plans[0])
        assert keeper.stats.lost_races == 1 and keeper.stats.errors == 0
        assert keeper.stats.sent == 0  # dry run
    finally:
        await idx.close()


def test_lost_race_name_matches_abi() -> None:
    assert LOST_RACE == "NotLiquidatable"
    assert isinstance(liquidation_available(), bool)


async def test_feeder_pushes_scenario_on_schedule(ex: LocalExchange) -> None:
    now = [0]
    feeder = OracleFeeder(connect(ex.node.url), dev_key(ADMIN), {"ETH": (ex.deployment.feeds["ETH"], 8)},
                          {"ETH": ScenarioPath.parse(3_000 * PRICE, "-40% in 10m")}, clock=lambda: now[0])
    seen = []
    for t in (0, 300_000, 599_000, 600_000, 700_000):
        now[0] = t
        await feeder.step()
        seen.append(ex.client.oracle_price(0))
    assert seen[0] == 3_000 * PRICE and seen[1] == 2_400 * PRICE
    assert seen[2] > 1_800 * PRICE and seen[3] == seen[4] == 1_800 * PRICE
    pushed = await feeder.step()
    assert pushed == {}  # unchanged price: nothing sent
