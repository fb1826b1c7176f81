"""Deposit, settle signed fills, read health, withdraw — on a real anvil with the real contracts."""
from __future__ import annotations

import pytest

from crossbook.chain.errors import ContractRevert
from crossbook.chain.local_exchange import LocalExchange, user_key, user_signer
from crossbook.config import PRICE, SIZE, USD, risk_params
from crossbook.eip712 import Domain
from crossbook.margin import compute_health_at, fee_amount, fill_cash
from crossbook.protocol_types import NONCE_SPENT, FillItem, RejectReason

ETH = 0  # market ids of the default listing
BTC = 1
ALICE, BOB, CAROL = user_signer(1), user_signer(2), user_signer(3)


def _funded(ex: LocalExchange, amount: int = 100_000 * USD) -> None:
    for u in (ALICE, BOB):
        ex.fund(u.address, 0, "USDC", amount)


def test_deposit_credits_the_subaccount_and_the_contract_holds_the_tokens(ex: LocalExchange) -> None:
    before = ex.client.token("USDC").functions.balanceOf(ex.client.contract.address).call()
    ex.fund(ALICE.address, 7, "USDC", 1_234 * USD)
    ex.fund(ALICE.address, 7, "WETH", 2 * 10**18)
    assert ex.client.quote_balance(ALICE.address, 7) == 1_234 * USD
    assert ex.client.collateral_balance(ALICE.address, 7, 1) == 2 * 10**18
    assert ex.client.quote_balance(ALICE.address, 0) == 0  # another sub-account is untouched
    after = ex.client.token("USDC").functions.balanceOf(ex.client.contract.address).call()
    assert after - before == 1_234 * USD


def test_a_batch_of_signed_fills_moves_positions_cash_and_fees(ex: LocalExchange) -> None:
    _funded(ex)
    maker = ex.order(BOB, ETH, False, 3_000 * PRICE, 3 * SIZE)
    fills = [
        ex.fill(ex.order(ALICE, ETH, True, 3_010 * PRICE, SIZE), maker, SIZE, 3_000 * PRICE),
        ex.fill(ex.order(ALICE, ETH, True, 3_010 * PRICE, 2 * SIZE), maker, 2 * SIZE, 3_000 * PRICE),
    ]
    seq = ex.client.next_seq()
    res = ex.settle(fills)
    assert res.rejected == {}
    assert ex.client.next_seq() == seq + 2
    cash = fill_cash(SIZE, 3_000 * PRICE)
    taker_fees = fee_amount(cash, 500) + fee_amount(2 * cash, 500)
    maker_fees = fee_amount(cash, 200) + fee_amount(2 * cash, 200)
    assert ex.client.position(ALICE.address, 0, ETH).size == 3 * SIZE
    assert ex.client.position(BOB.address, 0, ETH).size == -3 * SIZE
    assert ex.client.quote_balance(ALICE.address, 0) == 100_000 * USD - 3 * cash - taker_fees
    assert ex.client.quote_balance(BOB.address, 0) == 100_000 * USD + 3 * cash - maker_fees
    # the second fill completed the maker's order: its nonce is spent (docs/protocol.md section 4)
    assert ex.client.filled_amount(BOB.address, maker[0].nonce) == NONCE_SPENT
    assert ex.client.contract.functions.feePool().call() == taker_fees + maker_fees


def test_health_view_equals_the_python_margin_math(ex: LocalExchange) -> None:
    _funded(ex)
    ex.fund(ALICE.address, 0, "WETH", 5 * 10**18)
    maker = ex.order(BOB, BTC, True, 60_000 * PRICE, SIZE)
    ex.settle([ex.fill(ex.order(ALICE, BTC, False, 59_000 * PRICE, SIZE // 2), maker, SIZE // 2, 60_000 * PRICE)])
    ex.set_price("BTC", 57_000 * PRICE)  # Alice's short gains, Bob's long loses
    ex.set_price("ETH", 2_500 * PRICE)
    prices = ex.client.prices()
    params = risk_params()
    for user in (ALICE, BOB):
        expected = compute_health_at(ex.client.subaccount(user.address, 0), params, prices)
        assert ex.client.health(user.address, 0) == expected
    alice = ex.client.health(ALICE.address, 0)
    assert alice.initial_equity < alice.equity  # unrealized profit is haircut for initial health


def test_duplicate_and_out_of_order_batches_revert_without_effect(ex: LocalExchange) -> None:
    _funded(ex)
    item = ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, SIZE), ex.order(BOB, ETH, False, 3_000 * PRICE, SIZE),
                   SIZE, 3_000 * PRICE)
    seq = ex.client.next_seq()
    ex.settle([item], first_seq=seq)
    with pytest.raises(ContractRevert) as dup:
        ex.settle([item], first_seq=seq)
    assert dup.value.name == "BatchOutOfOrder" and dup.value.args_ == (seq + 1, seq)
    with pytest.raises(ContractRevert) as gap:
        ex.settle([item], first_seq=seq + 5)
    assert gap.value.name == "BatchOutOfOrder"
    assert ex.client.next_seq() == seq + 1
    assert ex.client.position(ALICE.address, 0, ETH).size == SIZE  # applied once


def test_only_the_operator_may_settle(ex: LocalExchange) -> None:
    item = ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, SIZE), ex.order(BOB, ETH, False, 3_000 * PRICE, SIZE),
                   SIZE, 3_000 * PRICE)
    from crossbook.batch_codec import encode_batch

    with pytest.raises(ContractRevert) as err:
        ex.admin.transact(ex.client.contract.functions.settle(encode_batch(ex.client.next_seq(), [item])))
    assert err.value.name == "AccessControlUnauthorizedAccount"


def test_bad_items_are_rejected_with_reasons_and_change_nothing(ex: LocalExchange) -> None:
    _funded(ex)
    px = 3_000 * PRICE
    maker = ex.order(BOB, ETH, False, px, 10 * SIZE)
    forged_taker = ex.order(CAROL, ETH, True, px, SIZE, owner=ALICE.address)  # Carol is no agent of Alice
    wrong_chain = ex.order(ALICE, ETH, True, px, SIZE, domain=Domain(1, ex.deployment.clearinghouse))
    wrong_contract = ex.order(ALICE, ETH, True, px, SIZE, domain=Domain(ex.deployment.chain_id, BOB.address))
    expired = ex.order(ALICE, ETH, True, px, SIZE, expiry=1)
    cheap = ex.order(ALICE, ETH, True, px - PRICE, SIZE)  # limit below the fill price
    low_fee = ex.order(ALICE, ETH, True, px, SIZE, max_fee_ppm=100)
    small = ex.order(ALICE, ETH, True, px, SIZE)
    reduce_only = ex.order(ALICE, ETH, True, px, SIZE, reduce_only=True)  # Alice has no short to reduce
    huge = ex.order(ALICE, ETH, True, px, 1_000 * SIZE)  # 3M USD notional on 100k collateral
    same_side = ex.order(BOB, ETH, True, px, SIZE)
    items = [
        ex.fill(forged_taker, maker, SIZE, px),
        ex.fill(wrong_chain, maker, SIZE, px),
        ex.fill(wrong_contract, maker, SIZE, px),
        ex.fill(expired, maker, SIZE, px),
        ex.fill(cheap, maker, SIZE, px),
        ex.fill(low_fee, maker, SIZE, px),
        ex.fill(small, maker, 2 * SIZE, px),  # more than the taker signed
        ex.fill(reduce_only, maker, SIZE, px),
        ex.fill(huge, ex.order(BOB, ETH, False, px, 1_000 * SIZE), 1_000 * SIZE, px),
        ex.fill(same_side, maker, SIZE, px),
        ex.fill(ex.order(ALICE, ETH, True, px + 1, SIZE), maker, SIZE, px + 1),  # off tick
    ]
    first = ex.client.next_seq()
    res = ex.settle(items)
    R = RejectReason
    assert res.rejected == {
        first + 0: R.BAD_SIGNATURE, first + 1: R.BAD_SIGNATURE, first + 2: R.BAD_SIGNATURE,
        first + 3: R.EXPIRED, first + 4: R.PRICE_LIMIT, first + 5: R.FEE_TOO_HIGH, first + 6: R.OVERFILL,
        first + 7: R.REDUCE_ONLY, first + 8: R.INSUFFICIENT_MARGIN, first + 9: R.INVALID_ITEM,
        first + 10: R.INVALID_ITEM,
    }
    assert ex.client.next_seq() == first + len(items)  # rejected items still consume their sequence
    for u in (ALICE, BOB):
        assert ex.client.quote_balance(u.address, 0) == 100_000 * USD
        assert ex.client.position(u.address, 0, ETH).size == 0
    assert ex.client.filled_amount(BOB.address, maker[0].nonce) == 0


def test_overfill_is_caught_across_batches(ex: LocalExchange) -> None:
    _funded(ex)
    maker = ex.order(BOB, ETH, False, 3_000 * PRICE, SIZE)
    ex.settle([ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, SIZE), maker, SIZE // 2, 3_000 * PRICE)])
    res = ex.settle([ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, SIZE), maker, SIZE, 3_000 * PRICE)])
    assert list(res.rejected.values()) == [RejectReason.OVERFILL]
    assert ex.client.filled_amount(BOB.address, maker[0].nonce) == SIZE // 2


def test_agent_signed_orders_count_until_the_agent_is_revoked(ex: LocalExchange) -> None:
    _funded(ex)
    ex.give_eth(ALICE.address)
    alice_tx = ex.client.sender(user_key(1))
    alice_tx.transact(ex.client.contract.functions.setAgent(CAROL.address, True))
    maker = ex.order(BOB, ETH, False, 3_000 * PRICE, 5 * SIZE)
    ok = ex.settle([ex.fill(ex.order(CAROL, ETH, True, 3_000 * PRICE, SIZE, owner=ALICE.address), maker, SIZE,
                            3_000 * PRICE)])
    assert ok.rejected == {}
    assert ex.client.position(ALICE.address, 0, ETH).size == SIZE
    alice_tx.transact(ex.client.contract.functions.setAgent(CAROL.address, False))
    bad = ex.settle([ex.fill(ex.order(CAROL, ETH, True, 3_000 * PRICE, SIZE, owner=ALICE.address), maker, SIZE,
                             3_000 * PRICE)])
    assert list(bad.rejected.values()) == [RejectReason.BAD_SIGNATURE]


def test_signed_withdrawal_pays_the_owner_once(ex: LocalExchange) -> None:
    _funded(ex)
    usdc = ex.client.token("USDC")
    item = ex.withdrawal(ALICE, 0, 400 * USD)
    res = ex.settle([item])
    assert res.rejected == {}
    assert usdc.functions.balanceOf(ALICE.address).call() == 400 * USD
    assert ex.client.quote_balance(ALICE.address, 0) == 100_000 * USD - 400 * USD
    replay = ex.settle([item])
    assert list(replay.rejected.values()) == [RejectReason.REPLAYED]
    too_much = ex.settle([ex.withdrawal(ALICE, 0, 200_000 * USD)])
    assert list(too_much.rejected.values()) == [RejectReason.INSUFFICIENT_BALANCE]
    assert usdc.functions.balanceOf(ALICE.address).call() == 400 * USD


def test_withdrawal_that_would_break_initial_margin_is_refused(ex: LocalExchange) -> None:
    ex.fund(ALICE.address, 0, "WETH", 10 * 10**18)  # 30k USD, 24k after the initial weight
    ex.fund(BOB.address, 0, "USDC", 100_000 * USD)
    ex.settle([ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, 30 * SIZE),
                       ex.order(BOB, ETH, False, 3_000 * PRICE, 30 * SIZE), 30 * SIZE, 3_000 * PRICE)])
    # 90k notional at 5% needs 4.5k initial margin; keeping 1 WETH (2.4k) is not enough.
    res = ex.settle([ex.withdrawal(ALICE, 1, 9 * 10**18)])
    assert list(res.rejected.values()) == [RejectReason.INSUFFICIENT_MARGIN]
    assert ex.client.collateral_balance(ALICE.address, 0, 1) == 10 * 10**18
    # Quote is never borrowed by a withdrawal: Alice's quote balance is negative after buying.
    res = ex.settle([ex.withdrawal(ALICE, 0, 1 * USD)])
    assert list(res.rejected.values()) == [RejectReason.INSUFFICIENT_BALANCE]
    ok = ex.settle([ex.withdrawal(ALICE, 1, 10**18)])
    assert ok.rejected == {}
    assert ex.client.token("WETH").functions.balanceOf(ALICE.address).call() == 10**18


def test_transfer_moves_collateral_between_own_subaccounts(ex: LocalExchange) -> None:
    _funded(ex)
    res = ex.settle([ex.transfer(ALICE, 0, 2_500 * USD, 0, 3)])
    assert res.rejected == {}
    assert ex.client.quote_balance(ALICE.address, 3) == 2_500 * USD
    assert ex.client.quote_balance(ALICE.address, 0) == 97_500 * USD


def test_stale_and_out_of_band_prices_block_margin_dependent_items(ex: LocalExchange) -> None:
    _funded(ex)

    def fill() -> FillItem:
        return ex.fill(ex.order(ALICE, ETH, True, 3_000 * PRICE, SIZE),
                       ex.order(BOB, ETH, False, 3_000 * PRICE, SIZE), SIZE, 3_000 * PRICE)

    assert ex.settle([fill()]).rejected == {}
    ex.advance_time(2 * 3600)  # past the one-hour heartbeat
    res = ex.settle([fill()])
    assert list(res.rejected.values()) == [RejectReason.ORACLE_UNAVAILABLE]
    with pytest.raises(ContractRevert) as err:  # Alice's ETH position needs the stale price
        ex.client.health(ALICE.address, 0)
    assert err.value.name == "OracleUnavailable"
    ex.refresh_prices()
    ex.set_price("ETH", 5 * PRICE)  # below the configured band floor of 10 USD
    res = ex.settle([fill()])
    assert list(res.rejected.values()) == [RejectReason.ORACLE_UNAVAILABLE]
    ex.set_price("ETH", 3_000 * PRICE)
    assert ex.settle([fill()]).rejected == {}
    assert ex.client.position(ALICE.address, 0, ETH).size == 2 * SIZE


def test_escape_hatch_pays_out_after_the_delay_without_the_operator(ex: LocalExchange) -> None:
    _funded(ex)
    ex.give_eth(ALICE.address)
    alice_tx = ex.client.sender(user_key(1))
    ch = ex.client.contract
    receipt = alice_tx.transact(ch.functions.requestForcedWithdrawal(0, 0, 1_000 * USD))
    (event,) = ch.events.ForcedWithdrawalRequested().process_receipt(receipt)
    request_id = event["args"]["requestId"]
    with pytest.raises(ContractRevert):
        alice_tx.transact(ch.functions.executeForcedWithdrawal(request_id))
    ex.advance_time(ex.spec.escape_delay_s + 1)
    ex.refresh_prices()
    alice_tx.transact(ch.functions.executeForcedWithdrawal(request_id))
    assert ex.client.token("USDC").functions.balanceOf(ALICE.address).call() == 1_000 * USD
    assert ex.client.quote_balance(ALICE.address, 0) == 99_000 * USD
    with pytest.raises(ContractRevert):  # executes once
        alice_tx.transact(ch.functions.executeForcedWithdrawal(request_id))
