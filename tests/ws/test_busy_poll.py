"""``busy_poll_us``: the loop polls without sleeping while requests keep coming, and goes back
to sleeping once they stop."""
from __future__ import annotations

import asyncio

from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order, start_server


async def test_polls_after_a_request_then_sleeps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), busy_poll_us=200_000)
    try:
        c = await Client.open(srv.url)
        assert (await c.login(USERS[0]))["ok"]
        assert srv._polling  # the login request started the poll
        r = await c.request("place", **signed_order(USERS[0], True, ETH_PX - 10 * TICK, LOT))
        assert r["ok"], r
        assert srv._polling
        await asyncio.sleep(0.5)  # no request for longer than the window
        assert not srv._polling
        assert (await c.request("ping"))["ok"]
        assert srv._polling  # a new request restarts it
        await c.close()
    finally:
        await srv.close()


async def test_off_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path))
    try:
        c = await Client.open(srv.url)
        assert (await c.login(USERS[0]))["ok"]
        assert not srv._polling
        await c.close()
    finally:
        await srv.close()
