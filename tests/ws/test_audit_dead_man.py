"""Audit: the dead-man's switch must still cancel a session's orders when its connection is gone
(a crashed bot's socket closes: that is what the switch is for), and it must only ever touch
the orders of the session that armed it."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order


def cancelled(oid: int) -> Callable[[dict[str, Any]], bool]:
    """Matches the CANCELLED update of order ``oid``."""
    return lambda f: f["type"] == "order" and f["order_id"] == oid and f["status"] == "CANCELLED"


async def test_dead_man_fires_after_the_connection_dropped(server: MatcherServer) -> None:
    watcher = await Client.open(server.url)  # same owner, another session: it must keep its order
    await watcher.login(USERS[0])
    await watcher.request("subscribe", channels=["orders"])
    keep = (await watcher.request("place", **signed_order(USERS[0], True, ETH_PX - 40 * TICK,
                                                          LOT)))["result"]["order_id"]
    bot = await Client.open(server.url)
    await bot.login(USERS[0])  # no cancel_on_disconnect: only the switch protects it
    oids = [(await bot.request("place", **signed_order(USERS[0], True, ETH_PX - (i + 1) * TICK,
                                                       LOT)))["result"]["order_id"]
            for i in range(3)]
    assert (await bot.request("dead_man", timeout_ms=300))["ok"]
    bot.ws.transport.abort()  # the bot dies: its socket closes without a word
    for o in oids:
        up = await watcher.wait_for(cancelled(o), 3)
        assert up["reason"] == "DEAD_MAN"
    assert keep in server.engine.orders
    assert not any(o in server.engine.orders for o in oids)
    await watcher.close()


async def test_disarmed_switch_of_a_dropped_connection_cancels_nothing(
        server: MatcherServer) -> None:
    bot = await Client.open(server.url)
    await bot.login(USERS[0])
    oid = (await bot.request("place", **signed_order(USERS[0], True, ETH_PX - TICK,
                                                     LOT)))["result"]["order_id"]
    assert (await bot.request("dead_man", timeout_ms=200))["ok"]
    assert (await bot.request("dead_man", timeout_ms=0))["ok"]
    bot.ws.transport.abort()
    await asyncio.sleep(0.6)
    assert oid in server.engine.orders
