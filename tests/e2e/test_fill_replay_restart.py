"""Fills do not vanish when the matcher process dies: ``crossbook matcher`` is killed with
SIGKILL after a market maker's order filled three times, and stopped gracefully after a fourth;
each time the maker reconnects to the restarted process and ``fills_after`` replays every fill it
had, complete and as sent (matcher/fill_log.py, docs/api.md)."""
from __future__ import annotations

import time
from typing import Any

from crossbook.chain.local_exchange import user_signer
from crossbook.config import PRICE, SIZE, USD
from tests.e2e.flow import run_async
from tests.e2e.stack import Stack, login, order_msg, wait_status
from tests.ws.helpers import Client, fill_frames

ETH = 0



def test_fills_are_replayed_after_kill9_and_after_a_stop(stack: Stack) -> None:
    maker, taker = user_signer(501), user_signer(502)
    stack.ex.fund_many([maker.address, taker.address], "USDC", 100_000 * USD)
    stack.interval_mining()  # the watcher waits for a confirmation block
    stack.start_matcher()
    stack.start_watcher()
    exp = int(time.time()) + 3600

    async def trade(n: int, mc: Client) -> None:
        tc = await login(stack, taker)
        seen = len(fill_frames(mc))
        for _ in range(n):
            o, sig = stack.ex.order(taker, ETH, True, 3_000 * PRICE, SIZE, expiry=exp)
            r = await tc.request("place", **order_msg(o, sig, "IOC"))
            assert r["ok"], r
        for _ in range(n):
            await mc.wait_for(lambda f: f.get("type") == "fill")
        assert len(fill_frames(mc)) == seen + n

    async def first() -> list[dict[str, Any]]:
        await wait_status(stack, lambda st: st["cmd_seq"] >= 3)  # two deposits + prices
        mc = await login(stack, maker, ["fills"])
        o, sig = stack.ex.order(maker, ETH, False, 3_000 * PRICE, 10 * SIZE, expiry=exp)
        assert (await mc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        await trade(3, mc)
        return fill_frames(mc)

    async def replay(expect: list[dict[str, Any]], more: int) -> list[dict[str, Any]]:
        mc = await login(stack, maker)
        r = await mc.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": len(expect), "complete": True}
        for _ in expect:
            await mc.wait_for(lambda f: f.get("type") == "fill")
        assert fill_frames(mc) == expect
        await trade(more, mc)
        return fill_frames(mc)

    before = run_async(first())
    stack.kill9("matcher")
    stack.start_matcher()
    after_kill = run_async(replay(before, 1))
    assert len(after_kill) == 4
    stack.stop("matcher")
    stack.start_matcher()
    run_async(replay(after_kill, 0))
