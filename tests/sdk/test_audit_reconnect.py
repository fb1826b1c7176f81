"""Audit of the SDK: its view after the server drops its connection mid-stream (fills made while
the link was down are replayed even when the client had seen no fill before, orders that ended
meanwhile are no longer presented as live (and are announced), the book is the engine's), and
what a reprice without a size re-signs."""
from __future__ import annotations

import asyncio
from typing import Any

from crossbook.sdk import Client, NonceManager
from matcher.server import MatcherServer
from tests.ws.helpers import until
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, addr
from tests.ws.helpers import Client as RawClient


def drop_bot(server: MatcherServer, bot: Client) -> None:
    """The server drops ``bot``'s connection (as a network failure would), not the other
    connections of its owner."""
    assert bot._ws is not None
    port = bot._ws.local_address[1]
    for conn in list(server.conns):
        if conn.ws.remote_address[1] == port:
            conn.kill(1011, "test drop")


async def test_fills_before_the_first_one_seen_are_replayed(server: MatcherServer) -> None:
    bot = await Client.connect(server.url, nonces=NonceManager(start=1))
    taker = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await taker.login(USERS[1])
        await taker.place(0, False, ETH_PX + 9 * TICK, LOT)
        await bot.login(USERS[0])
        await bot.place(0, True, ETH_PX + 9 * TICK, LOT, tif="IOC")  # a fill before subscribing
        fills: list[dict[str, Any]] = []
        await bot.subscribe(["fills"], callback=fills.append)
        a = await bot.place(0, False, ETH_PX, 2 * LOT)
        bot.frame_filter = lambda m: m.get("type") == "response"  # the link goes quiet
        await taker.place(0, True, ETH_PX, 2 * LOT, tif="IOC")  # fills a while the bot is away
        await until(lambda: a.order_id not in server.engine.orders)
        drop_bot(server, bot)
        bot.frame_filter = None
        await until(lambda: bot.stats.reconnects == 1 and bot.connected, 10)
        await until(lambda: len(fills) >= 1)
        await asyncio.sleep(0.1)
        # the fill made while away, once; not the one from before the subscription
        assert [(f["order_id"], f["size"]) for f in fills] == [(a.order_id, 2 * LOT)]
        assert (bot.stats.fills_replayed, bot.stats.fill_gaps) == (1, 0)
        assert bot.last_fill_seq == fills[0]["seq"]
    finally:
        await taker.close()
        await bot.close()


async def test_view_after_a_server_side_drop(server: MatcherServer) -> None:
    bot = await Client.connect(server.url, nonces=NonceManager(start=1))
    taker = await Client.connect(server.url, nonces=NonceManager(start=1))
    other = await RawClient.open(server.url)  # the same owner on another connection
    try:
        await bot.login(USERS[0])
        await taker.login(USERS[1])
        await other.login(USERS[0])
        seen: list[dict[str, Any]] = []
        await bot.subscribe(["orders", "fills", "book.0"], callback=seen.append)
        await until(lambda: 0 in bot.books and bot.books[0].valid)
        a = await bot.place(0, False, ETH_PX, 2 * LOT)
        b = await bot.place(0, False, ETH_PX + TICK, 3 * LOT)
        c = await bot.place(0, True, ETH_PX - 5 * TICK, LOT)
        await until(lambda: bot.books[0].best_bid() == (ETH_PX - 5 * TICK, LOT))
        assert set(bot.orders) == {a.order_id, b.order_id, c.order_id}

        bot.frame_filter = lambda m: m.get("type") == "response"  # the link goes quiet
        await taker.place(0, True, ETH_PX + TICK, 3 * LOT, tif="IOC")  # fills a, 1 lot of b
        assert (await other.request("cancel", order_id=c.order_id))["ok"]
        await until(lambda: c.order_id not in server.engine.orders)
        drop_bot(server, bot)
        bot.frame_filter = None
        await until(lambda: bot.stats.reconnects == 1 and bot.connected, 10)
        await until(lambda: bot.books[0].valid and bot.stats.fills_replayed == 2)

        # orders: only b is live; a (filled) and c (cancelled elsewhere) ended while away
        assert set(server.engine.orders) == {b.order_id}
        assert set(bot.orders) == {b.order_id}
        ended = [m for m in seen if m["type"] == "orders_ended"]
        assert ended == [{"type": "orders_ended", "channel": "orders",
                          "order_ids": sorted([a.order_id, c.order_id])}]
        # book: the engine's top of book
        assert bot.books[0].top(50) == server.engine.books[0].depth(50)
        # fills: both replayed once, in order
        fills = [m for m in seen if m["type"] == "fill"]
        assert [(f["order_id"], f["size"]) for f in fills] == [(a.order_id, 2 * LOT),
                                                               (b.order_id, LOT)]
        assert bot.last_fill_seq == fills[-1]["seq"]
        # and the client still works: reprice the live order (needs its signed order)
        r = await bot.modify(b.order_id, price=ETH_PX + 2 * TICK)
        assert set(bot.orders) == {r.order_id} and r.order_id in server.engine.orders
    finally:
        await other.close()
        await taker.close()
        await bot.close()


async def test_reprice_without_size_takes_the_signed_size(server: MatcherServer) -> None:
    """docs/sdk.md: a cancel-replace by price alone re-signs the original size (a new nonce),
    so what filled before is not subtracted; passing ``size`` gives the open size asked."""
    bot = await Client.connect(server.url, nonces=NonceManager(start=1))
    taker = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await bot.login(USERS[0])
        await taker.login(USERS[1])
        a = await bot.place(0, False, ETH_PX, 10 * LOT)
        await taker.place(0, True, ETH_PX, 6 * LOT, tif="IOC")
        assert server.engine.orders[a.order_id].remaining == 4 * LOT
        r = await bot.modify(a.order_id, price=ETH_PX + TICK)
        assert server.engine.orders[r.order_id].remaining == 10 * LOT
        r2 = await bot.modify(r.order_id, price=ETH_PX + 2 * TICK, size=4 * LOT)
        assert server.engine.orders[r2.order_id].remaining == 4 * LOT
    finally:
        await taker.close()
        await bot.close()


async def test_an_order_that_ends_at_once_is_not_left_live(server: MatcherServer) -> None:
    """The order updates follow the ack within the same read: an IOC's FILLED, a FOK's
    CANCELLED must not be undone by the ack being processed after them."""
    bot = await Client.connect(server.url, nonces=NonceManager(start=1))
    maker = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await bot.login(USERS[0])
        await maker.login(USERS[1])
        seen: list[dict[str, Any]] = []
        await bot.subscribe(["orders"], callback=seen.append)
        await maker.place(0, False, ETH_PX, 10 * LOT)
        acks = [await bot.place(0, True, ETH_PX, LOT, tif="IOC"),  # filled
                await bot.place(0, True, ETH_PX - TICK, LOT, tif="IOC"),  # nothing to take
                await bot.place(0, True, ETH_PX, 20 * LOT, tif="FOK")]  # cannot fill whole
        live = await bot.place(0, True, ETH_PX - 9 * TICK, LOT)
        await until(lambda: sum(m["status"] in ("FILLED", "CANCELLED") for m in seen) == 3)
        await asyncio.sleep(0.05)
        assert not any(a.order_id in server.engine.orders for a in acks)
        assert set(bot.orders) == {live.order_id}
    finally:
        await maker.close()
        await bot.close()
