"""The SDK client against a real in-process matcher server (tests/ws/helpers.start_server):
login (owner and agent), place/cancel/modify/batch with acks and typed rejections,
withdraw/transfer, reconnect + resubscribe after the server drops the connection, book gap
detection (a delta dropped client-side) answered by a fresh snapshot, the dead-man's switch."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import pytest

from crossbook.sdk import Client, NonceManager, OrderRequest, Rejected
from matcher.commands import AgentSet
from matcher.server import MatcherServer
from tests.ws.helpers import AGENT, ETH_PX, LOT, TICK, USERS, addr, start_server, until


@pytest.fixture
async def client(server: MatcherServer) -> AsyncIterator[Client]:
    c = await Client.connect(server.url, nonces=NonceManager(start=1))
    await c.login(USERS[0])
    yield c
    await c.close()


async def test_place_cancel_modify_batch(client: Client, server: MatcherServer) -> None:
    orders = await client.subscribe(["orders"])
    ack = await client.place(0, True, ETH_PX - 10 * TICK, 100 * LOT, client_id=7)
    assert ack.order_id > 0 and ack.seq == server.engine.cmd_seq
    assert ack.order is not None and client.orders[ack.order_id] == ack.order
    up = await orders.get(5)
    assert up["order_id"] == ack.order_id and up["status"] == "OPEN"

    # size decrease in place
    m = await client.modify(ack.order_id, size=40 * LOT)
    assert m.order_id == ack.order_id
    # cancel-replace at a new price, signed by the SDK from the tracked original
    r = await client.modify(ack.order_id, price=ETH_PX - 12 * TICK)
    assert r.order_id != ack.order_id and r.order is not None
    assert r.order.price == ETH_PX - 12 * TICK and r.order.size == ack.order.size
    assert ack.order_id not in client.orders and r.order_id in client.orders
    c = await client.cancel(r.order_id)
    assert c.order_id == r.order_id
    assert not server.engine.orders

    # typed rejection, state unchanged
    with pytest.raises(Rejected) as exc:
        await client.place(0, True, ETH_PX - 10 * TICK + 1, LOT)
    assert exc.value.code == "OFF_TICK"

    # batch: pipelined, one ack or Rejected per order, in order
    res = await client.batch_place([
        OrderRequest(0, True, ETH_PX - i * TICK, LOT, tif="POST_ONLY") for i in range(1, 6)
    ] + [OrderRequest(0, False, ETH_PX, 0)])
    assert all(not isinstance(x, Rejected) for x in res[:5])
    assert isinstance(res[5], Rejected) and res[5].code == "BAD_SIZE"
    ids = [x.order_id for x in res[:5] if not isinstance(x, Rejected)]
    assert len(server.engine.orders) == 5
    cres = await client.batch_cancel(ids[:3] + [999_999])
    assert [isinstance(x, Rejected) for x in cres] == [False, False, False, True]
    assert len(server.engine.orders) == 2
    await client.cancel_all(sub=0)
    assert not server.engine.orders and not client.orders


async def test_cancel_all_of_every_sub_account(client: Client, server: MatcherServer) -> None:
    """``all_subs``: one request ends the owner's orders in every sub-account (and the SDK's
    table of them); another owner's order stays."""
    await client.transfer(0, 1, 0, 50_000_000_000)
    for sub in (0, 1):
        await client.place(0, True, ETH_PX - 10 * TICK, LOT, sub=sub)
    other = await Client.connect(server.url, nonces=NonceManager(start=1))
    await other.login(USERS[1])
    kept = await other.place(0, True, ETH_PX - 11 * TICK, LOT)
    assert len(client.orders) == 2 and len(server.engine.orders) == 3
    ack = await client.cancel_all(all_subs=True)
    assert ack.seq > 0
    assert set(server.engine.orders) == {kept.order_id} and not client.orders
    await other.close()


async def test_withdraw_transfer_and_agent(client: Client, server: MatcherServer) -> None:
    w = await client.withdraw(0, 5_000_000)
    assert w.seq > 0
    t = await client.transfer(0, 3, 0, 1_000_000)
    assert t.seq > w.seq
    # an agent approved on-chain (here: the engine's AgentSet command) logs in for the owner
    res = await server.submit(AgentSet(server.next_req_id(), addr(USERS[1]), addr(AGENT), True))
    assert res.ack.ok
    agent = await Client.connect(server.url)
    try:
        info = await agent.login(AGENT, owner=addr(USERS[1]))
        assert info["owner"] == addr(USERS[1]) and info["signer"] == addr(AGENT)
        ack = await agent.place(0, False, ETH_PX + 5 * TICK, LOT)
        assert ack.order is not None and ack.order.owner == addr(USERS[1])
        with pytest.raises(ValueError):
            await agent.withdraw(0, 1)  # withdrawals need the owner's own key
    finally:
        await agent.close()


async def test_reconnect_relogs_and_resubscribes(client: Client, server: MatcherServer) -> None:
    book_msgs: list[dict[str, Any]] = []
    await client.subscribe(["book.0", "orders"], callback=book_msgs.append)
    await until(lambda: client.stats.snapshots.get("book.0") == 1)
    await client.place(0, True, ETH_PX - 3 * TICK, 2 * LOT)
    await until(lambda: client.books[0].best_bid() == (ETH_PX - 3 * TICK, 2 * LOT))

    for conn in list(server.conns):
        conn.kill(1011, "test drop")  # the server drops every connection
    await until(lambda: client.stats.reconnects == 1 and client.connected, 10)
    # the resubscription brings a fresh snapshot with the resting order
    await until(lambda: client.stats.snapshots.get("book.0") == 2)
    assert client.books[0].valid and client.books[0].best_bid() == (ETH_PX - 3 * TICK, 2 * LOT)
    # logged in again: private ops work and the private channel is back
    n = len(book_msgs)
    ack = await client.place(0, True, ETH_PX - 4 * TICK, LOT)
    await until(lambda: any(m.get("type") == "order" and m.get("order_id") == ack.order_id
                            for m in book_msgs[n:]))
    assert (await client.status())["cmd_seq"] == server.engine.cmd_seq


async def test_gap_triggers_fresh_snapshot(client: Client, server: MatcherServer) -> None:
    dropped: list[dict[str, Any]] = []

    def drop_one_delta(msg: dict[str, Any]) -> bool:
        if msg.get("type") == "book" and msg.get("kind") == "delta" and not dropped:
            dropped.append(msg)
            return False
        return True

    await client.subscribe(["book.0"], callback=lambda m: None)
    await until(lambda: client.stats.snapshots.get("book.0") == 1)
    client.frame_filter = drop_one_delta
    await client.place(0, True, ETH_PX - 3 * TICK, 2 * LOT)   # this delta is lost
    await client.place(0, False, ETH_PX + 3 * TICK, 5 * LOT)  # this one reveals the gap
    await until(lambda: client.stats.gaps == 1)
    await until(lambda: client.stats.snapshots.get("book.0") == 2 and client.books[0].valid)
    assert dropped
    book = client.books[0]
    assert book.best_bid() == (ETH_PX - 3 * TICK, 2 * LOT)
    assert book.best_ask() == (ETH_PX + 3 * TICK, 5 * LOT)
    # deltas after the fresh snapshot apply normally
    await client.place(0, True, ETH_PX - 2 * TICK, LOT)
    await until(lambda: client.books[0].best_bid() == (ETH_PX - 2 * TICK, LOT))
    assert client.stats.gaps == 1


def _kill_owner(server: MatcherServer, owner: str) -> None:
    """The server drops every connection of ``owner`` (as a network failure would)."""
    for conn in list(server.conns):
        if conn.session.owner == owner:
            conn.kill(1011, "test drop")


async def test_fills_lost_with_the_connection_are_replayed(client: Client,
                                                          server: MatcherServer) -> None:
    fills: list[dict[str, Any]] = []
    await client.subscribe(["fills"], callback=fills.append)
    await client.place(0, False, ETH_PX, 10 * LOT)
    taker = await Client.connect(server.url, nonces=NonceManager(start=1))
    await taker.login(USERS[1])
    try:
        await taker.place(0, True, ETH_PX, LOT, tif="IOC")
        await until(lambda: len(fills) == 1)
        assert client.last_fill_seq == fills[0]["seq"]
        # the next two fills are in flight when the link dies: they never reach the bot
        client.frame_filter = lambda m: m.get("type") != "fill"
        for _ in range(2):
            await taker.place(0, True, ETH_PX, LOT, tif="IOC")
        await until(lambda: server.hub.fill_history.frames(addr(USERS[0])) == 3)
        client.frame_filter = None
        _kill_owner(server, addr(USERS[0]))
        await until(lambda: client.stats.reconnects == 1 and len(fills) == 3, 10)
        assert [f["seq"] for f in fills] == sorted({f["seq"] for f in fills})
        assert all(f["type"] == "fill" and f["size"] == LOT for f in fills)
        assert (client.stats.fills_replayed, client.stats.fill_gaps) == (2, 0)
        assert client.last_fill_seq == fills[-1]["seq"]
        # live fills after the replay arrive once
        await taker.place(0, True, ETH_PX, LOT, tif="IOC")
        await until(lambda: len(fills) == 4)
        await asyncio.sleep(0.1)
        assert len(fills) == 4 and fills[3]["seq"] > fills[2]["seq"]
        # a restarted bot names the last fill it processed and gets the rest
        again = await Client.connect(server.url, nonces=NonceManager(start=50))
        await again.login(USERS[0])
        later = await again.subscribe(["fills"], fills_after=fills[1]["seq"])
        got = [await later.get(5) for _ in range(2)]
        assert [m["seq"] for m in got] == [fills[2]["seq"], fills[3]["seq"]]
        assert again.stats.fills_replayed == 2
        await again.close()
    finally:
        await taker.close()


async def test_a_replay_the_server_cannot_prove_complete_is_announced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(journal_dir=str(tmp_path), fill_history=1)
    bot = await Client.connect(server.url, nonces=NonceManager(start=1))
    taker = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await bot.login(USERS[0])
        await taker.login(USERS[1])
        events = await bot.subscribe(["fills"])
        await bot.place(0, False, ETH_PX, 10 * LOT)
        await taker.place(0, True, ETH_PX, LOT, tif="IOC")
        first = await events.get(5)
        bot.frame_filter = lambda m: m.get("type") != "fill"
        for _ in range(2):  # the record keeps one frame: the first of these is lost for good
            await taker.place(0, True, ETH_PX, LOT, tif="IOC")
        await until(lambda: server.engine.ledger.next_seq > first["seq"] + 2)
        bot.frame_filter = None
        _kill_owner(server, addr(USERS[0]))
        notice = await events.get(10)
        assert notice == {"type": "fills_incomplete", "channel": "fills", "after": first["seq"],
                          "replayed": 1}
        last = await events.get(5)
        assert last["type"] == "fill" and last["seq"] == first["seq"] + 2
        assert (bot.stats.fill_gaps, bot.stats.fills_replayed) == (1, 1)
    finally:
        await taker.close()
        await bot.close()
        await server.close()


async def test_dead_man_switch(client: Client, server: MatcherServer) -> None:
    events = await client.subscribe(["orders", "*"])
    await client.start_dead_man(600, interval_s=0.15)
    ack = await client.place(0, True, ETH_PX - 3 * TICK, LOT)
    await asyncio.sleep(1.2)  # two timeouts: the keepalive keeps the order alive
    assert ack.order_id in server.engine.orders
    # the bot "hangs": refreshes stop (switch left armed), the server cancels
    await client.stop_dead_man(disarm=False)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while not any(m.get("status") == "CANCELLED" for m in seen):
        seen.append(await events.get(deadline - time.monotonic()))
    notice = next(m for m in seen if m["type"] == "dead_man")
    assert notice["cancelling"] == [ack.order_id]
    cancelled = next(m for m in seen if m.get("status") == "CANCELLED")
    assert cancelled["reason"] == "DEAD_MAN"
    assert ack.order_id not in server.engine.orders
