"""Audit of the relayer stream against docs/api.md ("every sequenced item from from_seq on, in
order, without gaps"): an ``unsubscribe`` naming ``stream`` must not let a second stream start
on the same connection (each item would then arrive twice)."""
from __future__ import annotations

import asyncio

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, USERS, Client, signed_order


async def test_one_stream_per_connection_whatever_is_unsubscribed(server: MatcherServer) -> None:
    mk = await Client.open(server.url)
    tk = await Client.open(server.url)
    relayer = await Client.open(server.url)
    await mk.login(USERS[0])
    await tk.login(USERS[1])
    assert (await mk.request("place", **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                LOT)))["ok"]
    assert (await relayer.request("stream", from_seq=1))["ok"]
    assert (await relayer.request("unsubscribe", channels=["stream"]))["ok"]
    r = await relayer.request("stream", from_seq=1)
    assert (r["ok"], r.get("code")) == (False, "BAD_REQUEST"), r
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                LOT)))["ok"]
    for _ in range(50):
        if len([f for f in relayer.all if f.get("type") == "item"]) >= 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert [f["seq"] for f in relayer.all if f.get("type") == "item"] == [1, 2]
    for c in (mk, tk, relayer):
        await c.close()
