"""Liquidation tiers on real signed fills and a real anvil (docs/protocol.md section 9).

Alice opens 10 ETH long at 3,000 with 10,000 USDC against Bob; Carol liquidates. ETH at 2,060 is tier 1
(partial), 2,030 tier 2 (whole position), 1,990 leaves bad debt.
"""
from __future__ import annotations

import pytest

from crossbook.chain.errors import ContractRevert
from crossbook.chain.local_exchange import LocalExchange, user_key, user_signer
from crossbook.config import PRICE, SIZE, USD, risk_params
from crossbook.liquidation import DEFAULT_LIQUIDATION_PARAMS, LiquidationQuote, bad_debt_split, quote_liquidation
from crossbook.margin import compute_health_at

ETH = 0
ALICE, BOB, CAROL = user_signer(1), user_signer(2), user_signer(3)
U64 = 2**64 - 1


def _open(ex: LocalExchange) -> None:
    ex.fund(ALICE.address, 0, "USDC", 10_000 * USD)
    ex.fund(BOB.address, 0, "USDC", 100_000 * USD)
    ex.fund(CAROL.address, 0, "USDC", 100_000 * USD)
    ex.give_eth(CAROL.address)
    res = ex.settle([ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, 10 * SIZE),
                             ex.order(BOB, ETH, False, 3_000 * PRICE, 10 * SIZE), 10 * SIZE, 3_000 * PRICE)])
    assert res.rejected == {}


def _quote(ex: LocalExchange, max_size: int = U64) -> LiquidationQuote:
    return quote_liquidation(ex.client.subaccount(ALICE.address, 0), risk_params(), ex.client.prices(), ETH,
                             max_size, DEFAULT_LIQUIDATION_PARAMS)


def test_healthy_account_cannot_be_liquidated(ex: LocalExchange) -> None:
    _open(ex)
    with pytest.raises(ContractRevert) as err:
        ex.client.liquidate(ex.client.sender(user_key(3)), ALICE.address, 0, ETH, U64, U64, 0)
    assert err.value.name == "NotLiquidatable"


def test_tier1_partial_matches_python_and_restores_health(ex: LocalExchange) -> None:
    _open(ex)
    ex.set_price("ETH", 2_060 * PRICE)
    q = _quote(ex)
    assert not q.critical and 0 < q.size < 10 * SIZE
    fund = ex.client.insurance_fund()
    receipt = ex.client.liquidate(ex.client.sender(user_key(3)), ALICE.address, 0, ETH, U64, U64, 0)
    (ev,) = ex.client.liquidated_in(receipt)
    assert (ev.size_delta, ev.price, ev.penalty, ev.insurance_share) == (
        q.size_delta, q.price, q.penalty, q.insurance_share)
    assert ex.client.insurance_fund() == fund + q.insurance_share
    assert ex.client.position(CAROL.address, 0, ETH).size == q.size
    h = ex.client.health(ALICE.address, 0)
    assert h.maintenance_health * 1_000_000 >= h.maintenance_requirement * DEFAULT_LIQUIDATION_PARAMS.buffer_ppm
    assert ex.client.liquidated_events(from_block=receipt["blockNumber"])[0] == ev


def test_price_limit_is_enforced(ex: LocalExchange) -> None:
    _open(ex)
    ex.set_price("ETH", 2_060 * PRICE)
    q = _quote(ex)
    with pytest.raises(ContractRevert) as err:
        ex.client.call_liquidate(CAROL.address, ALICE.address, 0, ETH, U64, q.price - 1, 0)
    assert err.value.name == "PriceLimit"
    assert ex.client.call_liquidate(CAROL.address, ALICE.address, 0, ETH, U64, q.price, 0) == (q.size, q.price)


def test_tier2_takes_the_whole_position(ex: LocalExchange) -> None:
    _open(ex)
    ex.set_price("ETH", 2_030 * PRICE)
    q = _quote(ex)
    assert q.critical and q.size == 10 * SIZE
    ex.client.liquidate(ex.client.sender(user_key(3)), ALICE.address, 0, ETH, U64, U64, 0)
    assert ex.client.position(ALICE.address, 0, ETH).size == 0


def test_bankrupt_account_then_bad_debt(ex: LocalExchange) -> None:
    _open(ex)
    ex.set_price("ETH", 1_990 * PRICE)
    assert compute_health_at(ex.client.subaccount(ALICE.address, 0), risk_params(), ex.client.prices()).equity < 0
    ex.client.liquidate(ex.client.sender(user_key(3)), ALICE.address, 0, ETH, U64, U64, 0)
    deficit = -ex.client.quote_balance(ALICE.address, 0)
    assert deficit > 0
    fee_pool = int(ex.client.contract.functions.feePool().call())
    ins, fee, unbacked = bad_debt_split(deficit, ex.client.insurance_fund(), fee_pool)
    ex.client.settle_bad_debt(ex.funder, ALICE.address, 0)
    assert ex.client.quote_balance(ALICE.address, 0) == 0
    assert ex.client.unbacked_debt() == unbacked
    assert ins + fee + unbacked == deficit
