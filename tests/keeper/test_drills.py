"""Liquidation drills on anvil with the real contracts and real keepers:

- two keepers racing on one account: one liquidation, the loser pays gas and nothing else;
- insurance fund exhausted: deleveraging (keeper with KEEPER_ROLE) or liquidation + bad debt
  (without it), as docs/protocol.md §9.6-9.7 describe; nobody is left with negative equity;
- frozen oracle: no liquidation at a stale price (the keeper does not send, a direct call
  reverts OracleUnavailable), reduce-only fills still settle (§9.8);
- withdrawing unrealized profit until liquidatable is refused on-chain.
"""
from __future__ import annotations

import pytest
from crossbook.chain.anvil import rpc_call
from crossbook.chain.devkeys import KEEPER, dev_address, dev_key
from crossbook.chain.errors import ContractRevert
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import RejectReason
from tests.keeper.helpers import close, drive, grant_keeper_role, ledger, make_keeper

ETH = 0
WHALE = user_signer(1)
A, B, C = user_signer(2), user_signer(3), user_signer(4)
KEEPER2 = 5  # another anvil dev account: a second, independent keeper


def _setup(ex: LocalExchange) -> None:
    """A (thin), B and C are long 3 ETH at 3000 against a well-funded whale short."""
    ex.fund(WHALE.address, 0, "USDC", 10_000_000 * USD)
    ex.fund(A.address, 0, "USDC", 1_000 * USD)
    ex.fund(B.address, 0, "USDC", 1_500 * USD)
    ex.fund(C.address, 0, "USDC", 5_000 * USD)
    px = 3_000 * PRICE
    items = []
    for who in (A, B, C):
        t = ex.order(who, ETH, True, px, 3 * SIZE)
        m = ex.order(WHALE, ETH, False, px, 3 * SIZE)
        items.append(ex.fill(t, m, 3 * SIZE, px))
    assert not ex.settle(items).rejected


def _fund_keepers(ex: LocalExchange, *indices: int) -> None:
    for i in indices:
        ex.fund(dev_address(i), 0, "USDC", 200_000 * USD)


async def test_two_keepers_race_one_liquidation_loser_pays_only_gas(ex: LocalExchange) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER, KEEPER2)
    k1, k2 = make_keeper(ex, dev_key(KEEPER)), make_keeper(ex, dev_key(KEEPER2))
    try:
        for k in (k1, k2):
            assert await k.tick() == []
        ex.set_price("ETH", 2_750 * PRICE)  # A below maintenance (tier 1), B and C fine
        start = ex.w3.eth.block_number
        before = {k.address: (ex.client.subaccount(k.address, 0), ex.w3.eth.get_balance(k.address))
                  for k in (k1, k2)}
        # Both see the same block and both confirm; with automine off their transactions land in
        # the same block, so exactly one of them can win.
        rpc_call(ex.node.url, "evm_setAutomine", [False])
        try:
            p1, p2 = await k1.tick(), await k2.tick()
            assert [p.key for p in p1] == [p.key for p in p2] == [(A.address, 0)]
            assert k1.stats.sent == k2.stats.sent == 1
            hashes = {k.address: k.in_flight[(A.address, 0)].hashes[0] for k in (k1, k2)}
            rpc_call(ex.node.url, "evm_mine")
        finally:
            rpc_call(ex.node.url, "evm_setAutomine", [True])
        for k in (k1, k2):
            await k.check_in_flight()
        events = ex.client.liquidated_events(start + 1)
        assert len(events) == 1  # no double liquidation
        winner = k1 if events[0].liquidator == k1.address else k2
        loser = k2 if winner is k1 else k1
        assert winner.stats.mined_ok == 1 and winner.stats.lost_races == 0
        assert loser.stats.mined_ok == 0 and loser.stats.lost_races == 1
        assert k1.stats.errors == k2.stats.errors == 0
        assert not ex.client.health(A.address, 0).maintenance_health < 0
        # the loser's sub-account is untouched; its ETH fell by exactly the gas of the reverted tx
        assert ex.client.subaccount(loser.address, 0) == before[loser.address][0]
        rcpt = ex.w3.eth.get_transaction_receipt(hashes[loser.address])  # type: ignore[arg-type]
        assert rcpt["status"] == 0 and rcpt["blockNumber"] == events[0].block_number
        gas_paid = rcpt["gasUsed"] * rcpt["effectiveGasPrice"]
        assert before[loser.address][1] - ex.w3.eth.get_balance(loser.address) == gas_paid
        # the winner holds exactly the liquidated size
        assert ex.client.position(winner.address, 0, ETH).size == -events[0].size_delta
    finally:
        await close((k1, k2))


def _all_keys(ex: LocalExchange, *keepers: str) -> list[tuple[str, int]]:
    return [(WHALE.address, 0), (A.address, 0), (B.address, 0), (C.address, 0)] + [(k, 0) for k in keepers]


async def test_insurance_exhausted_keeper_role_deleverages(ex: LocalExchange) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    grant_keeper_role(ex, dev_address(KEEPER))
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        await k.tick()
        assert k.keeper_role
        ex.set_price("ETH", 2_550 * PRICE)  # A: equity -354.5 USD; the fund is empty
        assert ex.client.health(A.address, 0).equity < 0 and ex.client.insurance_fund() == 0
        start = ex.w3.eth.block_number
        await drive([k])
        adl = ex.client.contract.events.Deleveraged().get_logs(from_block=start + 1)
        assert [(e["args"]["owner"], e["args"]["counterparty"]) for e in adl] == [(A.address, WHALE.address)]
        assert ex.client.position(A.address, 0, ETH).size == 0
        # B had positive equity: an ordinary liquidation, not a deleveraging (its small remaining
        # deficit after the penalty is then covered by the insurance shares just collected)
        assert [e.owner for e in ex.client.liquidated_events(start + 1)] == [B.address]
        bad = ex.client.contract.events.BadDebtSettled().get_logs(from_block=start + 1)
        assert all(e["args"]["unbacked"] == 0 for e in bad)
        for key in _all_keys(ex, k.address):
            h = ex.client.health(*key)
            assert h.equity >= 0 and h.maintenance_health >= 0, key
        assert ex.client.unbacked_debt() == 0
        assert ledger(ex, _all_keys(ex, k.address)).holds
        assert k.stats.errors == 0
    finally:
        await close([k])


async def test_insurance_exhausted_without_role_liquidates_then_settles_bad_debt(ex: LocalExchange) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        await k.tick()
        assert not k.keeper_role  # no deleveraging: the documented fallback is liquidate + bad debt
        ex.set_price("ETH", 2_550 * PRICE)
        start = ex.w3.eth.block_number
        await drive([k])
        assert {e.owner for e in ex.client.liquidated_events(start + 1)} == {A.address, B.address}
        bad = ex.client.contract.events.BadDebtSettled().get_logs(from_block=start + 1)
        # A (deep under water) and B (whole position taken in tier 1: its 2% penalty exceeded its
        # last 145 USD of equity) are both left with a negative quote and nothing else
        assert {e["args"]["owner"] for e in bad} == {A.address, B.address}
        # the fund (the insurance shares just collected) pays first, then the fee pool; the rest is unbacked
        unbacked = sum(e["args"]["unbacked"] for e in bad)
        assert unbacked > 0 and ex.client.unbacked_debt() == unbacked
        assert ex.client.insurance_fund() == 0
        assert ex.client.contract.functions.feePool().call() == 0
        assert ex.client.quote_balance(A.address, 0) == ex.client.quote_balance(B.address, 0) == 0
        for key in _all_keys(ex, k.address):
            assert ex.client.health(*key).equity >= 0, key
        assert ledger(ex, _all_keys(ex, k.address)).holds  # with unbackedDebt on the token side
        assert k.stats.errors == 0 and k.stats.sent_kinds == {"liquidate": 2, "bad_debt": 2}
    finally:
        await close([k])


def _freeze_eth(ex: LocalExchange) -> None:
    """Two hours pass; every feed but ETH is refreshed, so only ETH is stale."""
    ex.advance_time(2 * 3600)
    for sym in ("BTC", "SOL"):
        feed = ex.client.feed(sym)
        ex.admin.transact(feed.functions.setAnswer(feed.functions.latestRoundData().call()[1]))


async def test_frozen_oracle_no_liquidation_at_stale_price(ex: LocalExchange) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        ex.set_price("ETH", 2_550 * PRICE)  # A and B would be liquidatable at this price...
        _freeze_eth(ex)  # ...but it goes stale before any keeper acts
        start = ex.w3.eth.block_number
        assert await k.tick() == []
        assert 0 not in k.market_prices and k.stats.sent == 0 and k.stats.candidates == 0
        scan = k.index.book.scan(k.asset_prices, k.market_prices)
        assert {k.index.key_of(r) for r in scan.unpriced} >= {(A.address, 0), (B.address, 0)}
        with pytest.raises(ContractRevert) as err:
            ex.client.call_liquidate(k.address, A.address, 0, ETH, 3 * SIZE, 3_000 * PRICE, 0)
        assert err.value.name == "OracleUnavailable"
        assert ex.client.liquidated_events(start) == []
        # a fresh price: the keeper liquidates at once
        ex.set_price("ETH", 2_550 * PRICE)
        confirmed = await k.tick()
        assert {p.key for p in confirmed} == {(A.address, 0), (B.address, 0)}
    finally:
        await close([k])


def test_reduce_only_fills_settle_while_oracle_frozen(ex: LocalExchange) -> None:
    """§9.8 on anvil: with ETH stale, A closing 1 ETH against the whale's short settles; A adding,
    or flipping, is ORACLE_UNAVAILABLE; health stays unreadable (nothing liquidated)."""
    _setup(ex)
    _freeze_eth(ex)
    px = 3_000 * PRICE
    reduce = ex.fill(ex.order(A, ETH, False, px, SIZE), ex.order(WHALE, ETH, True, px, SIZE), SIZE, px)
    add = ex.fill(ex.order(A, ETH, True, px, SIZE), ex.order(WHALE, ETH, False, px, SIZE), SIZE, px)
    flip = ex.fill(ex.order(A, ETH, False, px, 5 * SIZE), ex.order(WHALE, ETH, True, px, 5 * SIZE), 5 * SIZE, px)
    res = ex.settle([reduce, add, flip])
    first = res.first_seq
    assert res.rejected == {first + 1: RejectReason.ORACLE_UNAVAILABLE, first + 2: RejectReason.ORACLE_UNAVAILABLE}
    assert ex.client.position(A.address, 0, ETH).size == 2 * SIZE
    assert ex.client.position(WHALE.address, 0, ETH).size == -8 * SIZE
    with pytest.raises(ContractRevert) as err:
        ex.client.health(A.address, 0)
    assert err.value.name == "OracleUnavailable"
    assert ledger(ex, _all_keys(ex)).holds


def test_withdrawing_unrealized_profit_until_liquidatable_is_refused(ex: LocalExchange) -> None:
    """A short's quote balance holds its sale proceeds; as the price falls the profit is only
    unrealized. Withdrawals that keep H_im >= 0 go through; the one that would push it below 0
    (toward liquidation) is rejected on-chain, and the account never becomes liquidatable."""
    ex.fund(WHALE.address, 0, "USDC", 10_000_000 * USD)
    ex.fund(A.address, 0, "USDC", 1_000 * USD)
    px = 3_000 * PRICE
    assert not ex.settle([ex.fill(ex.order(A, ETH, False, px, 3 * SIZE), ex.order(WHALE, ETH, True, px, 3 * SIZE),
                                  3 * SIZE, px)]).rejected
    ex.set_price("ETH", 2_500 * PRICE)  # +1500 USD unrealized
    h = ex.client.health(A.address, 0)
    assert h.initial_health > 1_500 * USD
    # one withdrawal of the whole quote balance (proceeds + profit) is refused
    q = ex.client.quote_balance(A.address, 0)
    res = ex.settle([ex.withdrawal(A, 0, q)])
    assert list(res.rejected.values()) == [RejectReason.INSUFFICIENT_MARGIN]
    # step by step: exactly the initial health can leave, one atom more cannot
    ok = ex.settle([ex.withdrawal(A, 0, h.initial_health)])
    assert ok.rejected == {}
    assert ex.client.health(A.address, 0).initial_health == 0
    res = ex.settle([ex.withdrawal(A, 0, 1)])
    assert list(res.rejected.values()) == [RejectReason.INSUFFICIENT_MARGIN]
    after = ex.client.health(A.address, 0)
    assert after.initial_health == 0 and after.maintenance_health > 0  # not liquidatable
