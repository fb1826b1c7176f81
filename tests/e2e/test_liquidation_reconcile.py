"""Chain-side events the matcher did not sequence, end to end on the real process stack
(anvil + ``crossbook matcher | watcher | relayer``): a liquidation that lands while fills are
matched but unsettled, and an escape-hatch withdrawal the owner executes on-chain after the delay.

In both, the watcher brings the event to the matcher, which applies it to its confirmed ledger
with the contract's arithmetic; the pending items the event invalidated are then rejected by the
contract and reversed through ``BatchSettled`` (invariant 4), and afterwards the matcher's ledger
equals the chain's views for every sub-account (invariant "one truth")."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from web3.logs import DISCARD

from crossbook.chain.local_exchange import user_key, user_signer
from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, USD
from crossbook.protocol_types import RejectReason
from tests.e2e.flow import run_async
from tests.e2e.stack import Stack, assert_ledger_matches_chain, assert_tiles, login, order_msg, wait_status

ETH = 0
LIQ_SUB = 1
CRASH = 2_050 * PRICE  # a 1 ETH long opened at $3,000 on $1,000 is liquidatable (partially) here


def conservation(stack: Stack, accounts: list[tuple[str, int]]) -> tuple[int, int]:
    """Both sides of invariant 2 for the quote asset (docs/protocol.md section 9.6 form)."""
    c = stack.ex.client.contract.functions
    usdc = stack.ex.client.token("USDC")
    lhs = int(usdc.functions.balanceOf(stack.ex.client.contract.address).call()) + int(c.unbackedDebt().call())
    rhs = sum(stack.ex.client.quote_balance(o, s) for o, s in accounts)
    rhs += int(c.insuranceFund().call()) + int(c.feePool().call())
    rhs += sum(int(c.fundingBalance(m).call()) for m in range(len(DEFAULT_SPEC.markets)))
    return lhs, rhs


def test_a_liquidation_during_unsettled_fills_reconciles(stack: Stack) -> None:
    target, maker, other, liq = (user_signer(i) for i in (311, 312, 313, 314))
    stack.ex.fund_many([target.address], "USDC", 1_000 * USD)
    stack.ex.fund_many([maker.address, other.address], "USDC", 1_000_000 * USD)
    stack.ex.fund(liq.address, LIQ_SUB, "USDC", 100_000 * USD)
    stack.ex.give_eth(liq.address)
    insurance_before = stack.ex.client.insurance_fund()
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()
    stack.start_relayer()
    liq_event: list[Any] = []

    async def scenario() -> None:
        await wait_status(stack, lambda s: s["cmd_seq"] >= 5)  # four deposits + oracle prices
        tc = await login(stack, target, ["orders", "fills", "positions"])
        mc = await login(stack, maker, ["fills"])
        lc = await login(stack, liq, ["fills"])
        oc = await login(stack, other)
        exp = int(time.time()) + 3600
        o, sig = stack.ex.order(maker, ETH, False, 3_000 * PRICE, 3 * SIZE, expiry=exp)
        assert (await mc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        # 1. a settled, leveraged 1 ETH long on $1,000 (seq 1)
        o, sig = stack.ex.order(target, ETH, True, 3_000 * PRICE, SIZE, expiry=exp)
        assert (await tc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        await wait_status(stack, lambda s: s["settled_seq"] == 1)
        stack.stop("relayer")  # from here on fills are matched but not settled
        # 2. pending: the target buys 0.1 more (seq 2), another trader too (seq 3); the target
        # also rests a bid the liquidation must cancel
        o, sig = stack.ex.order(target, ETH, True, 3_000 * PRICE, SIZE // 10, expiry=exp)
        assert (await tc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        o, sig = stack.ex.order(other, ETH, True, 3_000 * PRICE, SIZE // 10, expiry=exp)
        assert (await oc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        o, sig = stack.ex.order(target, ETH, True, 2_500 * PRICE, SIZE // 5, expiry=exp)
        r = await tc.request("place", **order_msg(o, sig, "GTC"))
        assert r["ok"], r
        resting = r["result"]["order_id"]
        st = await stack.status()
        assert (st["matched_seq"], st["settled_seq"]) == (3, 1)
        # 3. the price crashes on-chain and a liquidator takes over part of the long directly
        await asyncio.to_thread(stack.ex.set_price, "ETH", CRASH)
        sender = stack.ex.client.sender(user_key(314))
        receipt = await asyncio.to_thread(stack.ex.client.liquidate, sender, target.address, 0, ETH,
                                          2**64 - 1, 2**64 - 1, LIQ_SUB)
        (ev,) = stack.ex.client.liquidated_in(receipt)
        liq_event.append(ev)
        assert 0 < -ev.size_delta < SIZE  # partial: tier 1
        # 4. the matcher hears it: the resting bid is cancelled (LIQUIDATION), both sides told
        cancel = await tc.wait_for(lambda f: f.get("type") == "order" and f["order_id"] == resting
                                   and f["status"] == "CANCELLED", timeout=30)
        assert cancel["reason"] == "LIQUIDATION"
        msg = await tc.wait_for(lambda f: f.get("type") == "liquidated", timeout=10)
        assert (msg["kind"], msg["role"], msg["sub"], msg["market"]) == ("liquidated", "target", 0, ETH)
        assert (msg["size_delta"], msg["price"], msg["penalty"], msg["insurance_share"]) == (
            ev.size_delta, ev.price, ev.penalty, ev.insurance_share)
        assert msg["counterparty"] == liq.address.lower() and msg["counterparty_sub"] == LIQ_SUB
        assert msg["cancelled"] == [resting]
        lmsg = await lc.wait_for(lambda f: f.get("type") == "liquidated", timeout=10)
        assert (lmsg["role"], lmsg["sub"], lmsg["size_delta"]) == ("liquidator", LIQ_SUB, -ev.size_delta)
        # 5. the relayer settles the pending fills: the target's can no longer be margined, so
        # the contract rejects it and both sides see the bust; the other fill settles
        stack.start_relayer()
        for c in (tc, mc):
            b = await c.wait_for(lambda f: f.get("type") == "bust", timeout=30)
            assert (b["seq"], b["reason"]) == (2, int(RejectReason.INSUFFICIENT_MARGIN))
        for c in (tc, mc, lc, oc):
            await c.close()

    run_async(scenario())
    st = stack.wait_settled(3, timeout=30)
    assert st["lag_items"] == 0
    events = stack.settled_events()
    assert_tiles(events, 3)
    assert [r for e in events for r in e.rejected] == [(2, int(RejectReason.INSUFFICIENT_MARGIN))]
    (ev,) = liq_event
    assert stack.ex.client.insurance_fund() == insurance_before + ev.insurance_share
    accounts = [(u.address, 0) for u in (target, maker, other)] + [(liq.address, LIQ_SUB)]
    lhs, rhs = conservation(stack, accounts)
    assert lhs == rhs
    assert stack.chain_account(liq.address, LIQ_SUB).positions[ETH].size == -ev.size_delta
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)
    eng = stack.recovered_engine()
    # confirmed == projected == the chain's views, for every sub-account the matcher knows
    assert assert_ledger_matches_chain(stack, eng) == 4
    assert not [r for r in eng.orders.values() if r.acct == (target.address.lower(), 0)]


def test_an_owner_executed_escape_hatch_withdrawal_reconciles(stack: Stack) -> None:
    owner = user_signer(321)
    stack.ex.fund_many([owner.address], "USDC", 1_000 * USD)
    stack.ex.give_eth(owner.address)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()  # no relayer: the FORCED item the matcher sequences stays pending
    ch = stack.ex.client.contract
    tx = stack.ex.client.sender(user_key(321))
    amount = 300 * USD

    async def scenario() -> None:
        await wait_status(stack, lambda s: s["cmd_seq"] >= 2)
        c = await login(stack, owner, ["positions"])
        receipt = await asyncio.to_thread(tx.transact, ch.functions.requestForcedWithdrawal(0, 0, amount))
        (req,) = ch.events.ForcedWithdrawalRequested().process_receipt(receipt, errors=DISCARD)
        request_id = int(req["args"]["requestId"])
        # the matcher offers to execute it early: a FORCED item, sequenced but not settled
        await wait_status(stack, lambda s: s["matched_seq"] == 1 and s["settled_seq"] == 0)
        await c.wait_for(lambda f: f.get("type") == "position" and f["quote"] == 700 * USD, timeout=10)
        # nobody settles; after the delay the owner takes the money out on-chain
        await asyncio.to_thread(stack.ex.advance_time, DEFAULT_SPEC.escape_delay_s + 1)
        receipt = await asyncio.to_thread(tx.transact, ch.functions.executeForcedWithdrawal(request_id))
        (w,) = ch.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
        assert int(w["args"]["seq"]) == 0
        # confirmed 700, the still-pending FORCED item on top: 400 projected
        await c.wait_for(lambda f: f.get("type") == "position" and f["quote"] == 400 * USD, timeout=30)
        # the relayer finally sends the FORCED item: the chain rejects it (already executed)
        stack.start_relayer()
        await c.wait_for(lambda f: f.get("type") == "position" and f["quote"] == 700 * USD, timeout=30)
        await c.close()

    run_async(scenario())
    stack.wait_settled(1, timeout=30)
    events = stack.settled_events()
    assert [r for e in events for r in e.rejected] == [(1, int(RejectReason.REPLAYED))]
    assert stack.ex.client.quote_balance(owner.address, 0) == 700 * USD
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)
    assert assert_ledger_matches_chain(stack, stack.recovered_engine()) == 1
