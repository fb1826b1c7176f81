"""Rate limit, message size, slow consumers, floods, the dead-man's switch and cancel on
disconnect."""
from __future__ import annotations

import asyncio
import json
import time

from matcher.limits import Limits, TokenBucket
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order, start_server


def test_token_bucket() -> None:
    t = [0.0]
    b = TokenBucket(10, 5, clock=lambda: t[0])
    assert all(b.take() for _ in range(5)) and not b.take()
    t[0] += 0.1
    assert b.take() and not b.take()
    t[0] += 100
    assert sum(b.take() for _ in range(10)) == 5  # capped at the burst


async def wait_closed(c: Client) -> None:
    for _ in range(500):
        if c.closed:
            return
        await asyncio.sleep(0.02)


async def test_rate_limit_then_recover(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path),
                             limits=Limits(msgs_per_s=5, burst=10, flood_disconnect_after=1000))
    try:
        c = await Client.open(srv.url)
        t0 = time.monotonic()
        for i in range(30):
            await c.send_raw(json.dumps({"op": "ping", "id": i}))
        rs = [await c.response(i) for i in range(30)]
        # 10 from the burst, then one per 0.2 s while the 30 arrive (a loaded machine may take
        # longer than the usual few ms: the bound follows the time it took)
        refills = int((time.monotonic() - t0) * 5) + 1
        limited = [r for r in rs if not r["ok"]]
        assert 20 - refills <= len(limited) <= 20 and all(r["code"] == "RATE_LIMITED" for r in limited)
        assert limited
        await asyncio.sleep(0.5)
        assert (await c.request("ping"))["ok"]
        await c.close()
    finally:
        await srv.close()


async def test_flood_disconnects_others_fine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path),
                             limits=Limits(msgs_per_s=50, burst=10, flood_disconnect_after=20))
    try:
        good = await Client.open(srv.url)
        bad = await Client.open(srv.url)
        h = srv.engine.state_hash()
        try:
            for i in range(500):
                await bad.send_raw(json.dumps({"op": "ping", "id": i}))
        except Exception:
            pass
        await wait_closed(bad)
        assert bad.closed and bad.ws.close_code == 1008
        assert (await good.request("ping"))["ok"]
        assert srv.engine.state_hash() == h
        await good.close()
    finally:
        await srv.close()


async def test_message_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path),
                             limits=Limits(max_message_bytes=1000, hard_max_message_bytes=4000))
    try:
        c = await Client.open(srv.url)
        big = json.dumps({"op": "ping", "id": 1, "pad": "x" * 2000})
        await c.send_raw(big)
        e = await c.wait_for(lambda f: f["type"] == "response")
        assert e["code"] == "MESSAGE_TOO_LARGE" and e["id"] is None
        assert (await c.request("ping"))["ok"]  # still connected
        await c.send_raw("x" * 5000)  # above the hard limit: the websocket layer closes 1009
        await wait_closed(c)
        assert c.closed and c.ws.close_code == 1009
        c2 = await Client.open(srv.url)
        assert (await c2.request("ping"))["ok"]
        await c2.close()
    finally:
        await srv.close()


async def test_slow_consumer_disconnected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), limits=Limits(send_queue_frames=50))
    try:
        # a raw client that never reads: its kernel buffers fill, then our queue
        from websockets.asyncio.client import connect
        import socket
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        raw.connect(("127.0.0.1", srv.port))
        raw.setblocking(False)
        slow = await connect(srv.url, sock=raw, compression=None, max_queue=1, max_size=None)
        slow.transport.pause_reading()
        await slow.send(json.dumps({"op": "subscribe", "id": 1, "channels": ["book.0"]}))
        await asyncio.sleep(0.05)
        # simulate a thin link on the server side too (small kernel + transport buffers), so
        # the test does not have to push megabytes through loopback first
        (sconn,) = list(srv.conns)
        ssock = sconn.ws.transport.get_extra_info("socket")
        ssock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sconn.ws.transport.set_write_buffer_limits(high=4096)
        fast = await Client.open(srv.url)
        assert (await fast.request("subscribe", channels=["book.0"]))["ok"]
        mm = await Client.open(srv.url)
        await mm.login(USERS[0])
        n = 0
        for i in range(3000):
            # each order is a new best bid, so every one changes the top-50 view (a delta)
            r = await mm.request("place", **signed_order(USERS[0], True, ETH_PX - (3000 - i) * TICK,
                                                         LOT))
            assert r["ok"], r
            n += 1
            if len(srv.conns) == 2:
                break
        assert len(srv.conns) == 2, "slow consumer still connected"
        # everyone else still works and saw every delta in order
        last = None
        for f in fast.of_type("book"):
            if last is not None:
                assert f["prev_seq"] == last
            last = f["seq"]
        assert (await mm.request("ping"))["ok"]
        slow.transport.abort()
        await fast.close()
        await mm.close()
    finally:
        await srv.close()


async def test_dead_man_switch(server) -> None:  # type: ignore[no-untyped-def]
    c = await Client.open(server.url)
    await c.login(USERS[0])
    await c.request("subscribe", channels=["orders"])
    other = await Client.open(server.url)
    await other.login(USERS[0])  # same owner, other session: its order must survive
    r = await other.request("place", **signed_order(USERS[0], True, ETH_PX - 50 * TICK, LOT))
    keep = r["result"]["order_id"]
    oids = [(await c.request("place", **signed_order(USERS[0], True, ETH_PX - (i + 1) * TICK,
                                                     LOT)))["result"]["order_id"]
            for i in range(3)]
    r = await c.request("dead_man", timeout_ms=1000)
    assert r["ok"] and r["result"]["deadline_ms"] > 0
    for _ in range(3):  # refreshing keeps it from firing (wide margins: a loaded CI machine)
        await asyncio.sleep(0.4)
        assert (await c.request("dead_man", timeout_ms=1000))["ok"]
    assert all(o in server.engine.orders for o in oids)
    fired = await c.wait_for(lambda f: f["type"] == "dead_man", 10)
    assert sorted(fired["cancelling"]) == sorted(oids)
    for o in oids:
        up = await c.wait_for(lambda f, o=o: f["type"] == "order" and f["order_id"] == o
                              and f["status"] == "CANCELLED")
        assert up["reason"] == "DEAD_MAN"
    assert keep in server.engine.orders and not any(o in server.engine.orders for o in oids)
    # disarm works
    assert (await c.request("dead_man", timeout_ms=0))["result"]["deadline_ms"] is None
    await c.close()
    await other.close()


async def test_cancel_on_disconnect(server) -> None:  # type: ignore[no-untyped-def]
    c = await Client.open(server.url)
    assert (await c.login(USERS[0], cancel_on_disconnect=True))["result"]["cancel_on_disconnect"]
    oid = (await c.request("place", **signed_order(USERS[0], True, ETH_PX - TICK,
                                                   LOT)))["result"]["order_id"]
    assert oid in server.engine.orders
    await c.close()
    for _ in range(50):
        if oid not in server.engine.orders:
            break
        await asyncio.sleep(0.02)
    assert oid not in server.engine.orders
