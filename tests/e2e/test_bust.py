"""Invariant 4 end to end: a fill the contract rejects is busted consistently on both sides.

The taker's fill is matched while the matcher's oracle price makes it healthy; the oracle then
crashes on-chain before the relayer settles, so the contract rejects the fill with
INSUFFICIENT_MARGIN (without blocking the batch: a second fill in it settles). The watcher brings
the rejection to the matcher, which reverses the fill and tells both parties on their private
``fills`` channel; afterwards the shadow ledger equals the chain."""
from __future__ import annotations

import asyncio
import time

from crossbook.chain.local_exchange import user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import RejectReason
from tests.e2e.flow import run_async
from tests.e2e.stack import Stack, assert_ledger_matches_chain, assert_tiles, login, order_msg

ETH = 0


def test_a_fill_rejected_on_chain_is_busted_on_both_sides(stack: Stack) -> None:
    taker, other, maker = user_signer(301), user_signer(302), user_signer(303)
    stack.ex.fund_many([taker.address], "USDC", 1_000 * USD)
    stack.ex.fund_many([other.address, maker.address], "USDC", 1_000_000 * USD)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()  # no relayer yet: the fills wait, matched but unsettled

    async def scenario() -> None:
        deadline = time.monotonic() + 30
        while (await stack.status())["cmd_seq"] < 4:  # three deposits + oracle prices
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        tc = await login(stack, taker, ["fills", "positions"])
        mc = await login(stack, maker, ["fills"])
        oc = await login(stack, other)
        exp = int(time.time()) + 3600
        o, sig = stack.ex.order(maker, ETH, False, 3_000 * PRICE, 2 * SIZE, expiry=exp)
        assert (await mc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        # 1 ETH long on $1,000: healthy at $3,000 (needs $150 initial margin)...
        o, sig = stack.ex.order(taker, ETH, True, 3_000 * PRICE, SIZE, expiry=exp)
        assert (await tc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        o, sig = stack.ex.order(other, ETH, True, 3_000 * PRICE, SIZE // 10, expiry=exp)
        assert (await oc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        fill = await tc.wait_for(lambda f: f.get("type") == "fill")
        assert fill["seq"] == 1
        st = await stack.status()
        assert (st["matched_seq"], st["settled_seq"], st["lag_items"]) == (2, 0, 2)
        # ...but not once ETH is $1,500 on-chain: the contract must reject seq 1
        await asyncio.to_thread(stack.ex.set_price, "ETH", 1_500 * PRICE)
        stack.start_relayer()
        busts = [await c.wait_for(lambda f: f.get("type") == "bust", timeout=60) for c in (tc, mc)]
        for b in busts:
            assert (b["channel"], b["seq"], b["sub"], b["reason"]) == (
                "fills", 1, 0, int(RejectReason.INSUFFICIENT_MARGIN))
        # the taker's projected account is back to its deposit, no position
        pos = await tc.wait_for(lambda f: f.get("type") == "position" and not f["positions"]
                                and f["quote"] == 1_000 * USD, timeout=10)
        assert pos["sub"] == 0
        for c in (tc, mc, oc):
            await c.close()

    run_async(scenario())
    st = stack.wait_settled(2, timeout=30)
    assert st["lag_items"] == 0
    events = stack.settled_events()
    assert_tiles(events, 2)
    assert [r for e in events for r in e.rejected] == [(1, int(RejectReason.INSUFFICIENT_MARGIN))]
    assert stack.ex.client.filled_amount(taker.address, 1) == 0
    assert stack.ex.client.position(other.address, 0, ETH).size == SIZE // 10
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)
    assert assert_ledger_matches_chain(stack, stack.recovered_engine()) == 3
