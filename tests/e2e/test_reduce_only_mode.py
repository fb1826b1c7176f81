"""Reduce-only mode end to end (docs/protocol.md §9.8, docs/api.md): ETH's feed goes stale on-chain
while the stack runs. The matcher's oracle poller sees the adapter refuse the price and the
``prices`` channel says so; the matcher then refuses an order that opens a position
(ORACLE_UNAVAILABLE) and a close that would leave a deficit at its limit (INSUFFICIENT_MARGIN),
and matches a solvent close between two closing sides, which the relayer settles and the contract
applies: no fill is busted, and afterwards the shadow ledger equals the chain."""
from __future__ import annotations

import asyncio
import time

from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import PRICE, SIZE, USD
from tests.e2e.flow import run_async
from tests.e2e.stack import (
    Stack,
    assert_ledger_matches_chain,
    assert_tiles,
    login,
    order_msg,
    wait_status,
)
from tests.ws.helpers import Client

ETH = 0


def _stale_eth(ex: LocalExchange) -> None:
    """ETH's feed answers with an update older than the adapter's heartbeat (the chain's clock
    does not move: orders signed against the wall clock stay valid)."""
    feed = ex.client.feed("ETH")
    answer = feed.functions.latestRoundData().call()[1]
    now = ex.w3.eth.get_block("latest")["timestamp"]
    ex.admin.transact(feed.functions.setAnswerAt(answer, now - 2 * 3600))


def test_an_oracle_outage_puts_the_market_in_reduce_only_mode(stack: Stack) -> None:
    # a: 1,000 USD, long 3 ETH at 3,000 (3x); b: short 3 ETH against it; c: no position
    a, b, c = user_signer(401), user_signer(402), user_signer(403)
    stack.ex.fund_many([a.address], "USDC", 1_000 * USD)
    stack.ex.fund_many([b.address, c.address], "USDC", 100_000 * USD)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()
    stack.start_relayer()

    async def scenario() -> None:
        await wait_status(stack, lambda st: st["cmd_seq"] >= 4)  # three deposits + oracle prices
        ac = await login(stack, a, ["fills"])
        bc = await login(stack, b, ["fills"])
        cc = await login(stack, c)
        pc = await Client.open(stack.url)
        assert (await pc.request("subscribe", channels=["prices"]))["ok"]
        first = await pc.wait_for(lambda f: f["type"] == "prices")
        assert first["unavailable_markets"] == [] and first["markets"]["0"] == 3_000 * PRICE
        exp = int(time.time()) + 3600
        o, sig = stack.ex.order(b, ETH, False, 3_000 * PRICE, 3 * SIZE, expiry=exp)
        assert (await bc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        o, sig = stack.ex.order(a, ETH, True, 3_000 * PRICE, 3 * SIZE, expiry=exp)
        assert (await ac.request("place", **order_msg(o, sig, "IOC")))["ok"]
        await ac.wait_for(lambda f: f.get("type") == "fill")
        await wait_status(stack, lambda st: st["settled_seq"] >= 1)

        await asyncio.to_thread(_stale_eth, stack.ex)
        gone = await pc.wait_for(lambda f: f["type"] == "prices" and f["unavailable_markets"], timeout=30)
        assert gone["unavailable_markets"] == [ETH] and gone["unavailable_assets"] == [1]  # WETH too

        # c cannot open a position
        o, sig = stack.ex.order(c, ETH, True, 3_000 * PRICE, SIZE, expiry=exp)
        r = await cc.request("place", **order_msg(o, sig, "GTC"))
        assert (r["ok"], r["code"]) == (False, "ORACLE_UNAVAILABLE"), r
        # a's close of everything at 2,600 would realize 1,200 against ~1,000 of equity
        o, sig = stack.ex.order(a, ETH, False, 2_600 * PRICE, 3 * SIZE, expiry=exp, reduce_only=True)
        r = await ac.request("place", **order_msg(o, sig, "IOC"))
        assert (r["ok"], r["code"]) == (False, "INSUFFICIENT_MARGIN"), r
        # b rests a closing bid; a closes 1 ETH into it, solvent at 2,990 on both sides
        o, sig = stack.ex.order(b, ETH, True, 2_990 * PRICE, SIZE, expiry=exp)
        r = await bc.request("place", **order_msg(o, sig, "GTC"))
        assert r["ok"], r
        o, sig = stack.ex.order(a, ETH, False, 2_990 * PRICE, SIZE, expiry=exp, reduce_only=True)
        r = await ac.request("place", **order_msg(o, sig, "IOC"))
        assert r["ok"], r
        fill = await ac.wait_for(lambda f: f.get("type") == "fill" and f["seq"] == 2)
        assert (fill["price"], fill["size"]) == (2_990 * PRICE, SIZE)
        for x in (ac, bc, cc, pc):
            await x.close()

    run_async(scenario())
    st = stack.wait_settled(2, timeout=60)
    assert st["lag_items"] == 0
    events = stack.settled_events()
    assert_tiles(events, 2)
    assert [r for e in events for r in e.rejected] == []  # the contract applied the close too
    assert stack.ex.client.position(a.address, 0, ETH).size == 2 * SIZE
    assert stack.ex.client.position(b.address, 0, ETH).size == -2 * SIZE
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)
    assert assert_ledger_matches_chain(stack, stack.recovered_engine()) == 3
