"""Audit: an agent whose approval the owner revoked on-chain loses the session's rights
(docs/api.md: re-checked on every request) - including reading the owner's private channels:
a new private subscription is refused and the ones it had stop; the owner's own session and
the public channels are untouched."""
from __future__ import annotations

import asyncio

from matcher.commands import AgentSet
from matcher.server import MatcherServer
from tests.ws.helpers import AGENT, ETH_PX, LOT, USERS, Client, addr, signed_order


async def test_revoked_agent_reads_no_more_private_data(server: MatcherServer) -> None:
    await server.submit(AgentSet(server.next_req_id(), addr(USERS[0]), addr(AGENT), True))
    agent, owner = await Client.open(server.url), await Client.open(server.url)
    assert (await agent.login(USERS[0], signer=AGENT))["ok"]
    assert (await owner.login(USERS[0]))["ok"]
    for c in (agent, owner):
        assert (await c.request("subscribe", channels=["orders", "fills", "positions",
                                                       "trades.0"]))["ok"]
    assert (await owner.request("place", **signed_order(USERS[0], False, ETH_PX, 2 * LOT)))["ok"]
    await agent.wait_for(lambda f: f["type"] == "order")
    await server.submit(AgentSet(server.next_req_id(), addr(USERS[0]), addr(AGENT), False))
    r = await agent.request("subscribe", channels=["health"])
    assert (r["ok"], r.get("code")) == (False, "NOT_AUTHORISED"), r
    assert (await agent.request("subscribe", channels=["book.0"]))["ok"]  # public: fine
    n = len(agent.all)
    taker = await Client.open(server.url)
    await taker.login(USERS[1])
    assert (await taker.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                   LOT)))["ok"]
    await owner.wait_for(lambda f: f["type"] == "fill")  # the owner's session still hears it
    await agent.wait_for(lambda f: f["type"] == "trade")  # and the agent the public trade
    await asyncio.sleep(0.1)
    private = [f for f in agent.all[n:] if f.get("channel") in ("orders", "fills", "positions",
                                                               "health")]
    assert private == []
    for c in (agent, owner, taker):
        await c.close()
