"""Audit of the orders channel: after a burst of random places (GTC, IOC, FOK, POST_ONLY, every
STP mode, short expiries), cancels, size modifies, cancel-replaces and mass cancels from several
connections of several owners, every order's updates on its owner's channel start after its ack,
end in exactly one terminal status (nothing after it), and the orders with no terminal status are
exactly the engine's live ones. Queue priority: a size decrease keeps it, a cancel-replace
loses it."""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, addr, signed_order, start_server

TERMINAL = ("FILLED", "CANCELLED")


async def trader(server: MatcherServer, c: Client, i: int, rng: random.Random, n: int,
                 acked: dict[int, int]) -> None:
    """``n`` random requests of USERS[i] on ``c``; ``acked``: order id -> index in ``c.all``
    of the response that named it."""
    live: list[int] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55 or not live:
            is_buy = rng.random() < 0.5
            px = ETH_PX + (-1 if is_buy else 1) * rng.randint(-4, 12) * TICK
            expiry = int(time.time()) + (rng.choice([2, 3600]))
            resp = await c.request(
                "place", tif=rng.choice(["GTC", "GTC", "IOC", "FOK", "POST_ONLY"]),
                stp=rng.choice(["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]),
                **signed_order(USERS[i], is_buy, px, rng.randint(1, 8) * LOT, expiry=expiry))
            if resp["ok"]:
                live.append(resp["result"]["order_id"])
        elif r < 0.7:
            resp = await c.request("cancel", order_id=live.pop(rng.randrange(len(live))))
        elif r < 0.8:
            resp = await c.request("modify", order_id=rng.choice(live), size=LOT)
        elif r < 0.95:
            old = rng.choice(live)
            rec = server.engine.orders.get(old)
            is_buy = rec.is_buy if rec is not None else True
            px = ETH_PX + (-1 if is_buy else 1) * rng.randint(1, 12) * TICK
            resp = await c.request("modify", order_id=old, **signed_order(
                USERS[i], is_buy, px, rng.randint(1, 8) * LOT))
            if resp["ok"]:
                live.append(resp["result"]["order_id"])
        else:
            resp = await c.request("cancel_all", sub=0)
        if resp["ok"] and resp["result"]["order_id"]:
            acked.setdefault(resp["result"]["order_id"], c.all.index(resp))


@pytest.mark.parametrize("seed", [7, 8])
async def test_every_order_ends_exactly_once(tmp_path, seed: int) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(journal_dir=str(tmp_path), expire_tick_s=0.2)
    rng = random.Random(seed)
    try:
        conns: list[tuple[int, Client]] = []
        for i in (0, 0, 1, 2):  # two connections of USERS[0]: one owner, two sessions
            c = await Client.open(server.url)
            assert (await c.login(USERS[i]))["ok"]
            assert (await c.request("subscribe", channels=["orders"]))["ok"]
            conns.append((i, c))
        acked: list[dict[int, int]] = [{} for _ in conns]
        # a quiet owner's order that only its expiry ends
        quiet = await Client.open(server.url)
        assert (await quiet.login(USERS[3]))["ok"]
        assert (await quiet.request("subscribe", channels=["orders"]))["ok"]
        quiet_expiry = int(time.time()) + 2
        r = await quiet.request("place", **signed_order(USERS[3], True, ETH_PX - 30 * TICK, LOT,
                                                        expiry=quiet_expiry))
        conns.append((3, quiet))
        acked.append({r["result"]["order_id"]: quiet.all.index(r)})
        await asyncio.gather(*(trader(server, c, i, random.Random(rng.random()), 150, acked[k])
                               for k, (i, c) in enumerate(conns[:4])))
        # the short expiries run out (an order is good through its expiry second) and the
        # ExpireTick sweeps them
        await asyncio.sleep(max(0.0, quiet_expiry + 1.5 - time.time()))
        for _, c in conns:
            assert (await c.request("ping"))["ok"]
        for k, (i, c) in enumerate(conns):
            ups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
            for at, f in enumerate(c.all):
                if f.get("type") == "order":
                    ups.setdefault(f["order_id"], []).append((at, f))
            for oid, at in acked[k].items():  # this connection's orders: ack first
                assert oid in ups and ups[oid][0][0] > at, (oid, at)
            open_ids = set()
            for oid, seq in ups.items():
                statuses = [f["status"] for _, f in seq]
                ends = [s for s in statuses if s in TERMINAL]
                assert len(ends) <= 1 and (not ends or statuses[-1] in TERMINAL), (oid, statuses)
                if not ends:
                    open_ids.add(oid)
                else:
                    assert seq[-1][1]["remaining"] == 0
                    assert (seq[-1][1]["reason"] is None) == (ends[0] == "FILLED")
            live = {oid for oid, rec in server.engine.orders.items()
                    if rec.acct[0] == addr(USERS[i])}
            assert open_ids == live, (open_ids ^ live)
        # the burst reached every ending: fills, cancels, IOC/FOK remainders, STP, expiry
        reasons = {f["reason"] for _, c in conns for f in c.all
                   if f.get("type") == "order" and f["status"] == "CANCELLED"}
        assert {"USER", "IOC_REMAINDER", "EXPIRED", "STP"} <= reasons, reasons
        for _, c in conns:
            await c.close()
    finally:
        await server.close()


async def test_size_decrease_keeps_priority_replace_loses_it(server: MatcherServer) -> None:
    mm, tk = await Client.open(server.url), await Client.open(server.url)
    await mm.login(USERS[0])
    await tk.login(USERS[1])
    a = (await mm.request("place", **signed_order(USERS[0], False, ETH_PX, 5 * LOT)))["result"]
    b = (await mm.request("place", **signed_order(USERS[0], False, ETH_PX, 5 * LOT)))["result"]
    assert (await mm.request("modify", order_id=a["order_id"], size=3 * LOT))["ok"]
    await tk.request("subscribe", channels=["fills"])
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                LOT)))["ok"]
    f = await tk.wait_for(lambda f: f["type"] == "fill")
    assert server.engine.orders[a["order_id"]].remaining == 2 * LOT  # a still went first
    assert server.engine.orders[b["order_id"]].remaining == 5 * LOT
    r = await mm.request("modify", order_id=a["order_id"], **signed_order(USERS[0], False,
                                                                          ETH_PX, 2 * LOT))
    a2 = r["result"]["order_id"]
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                LOT)))["ok"]
    await tk.wait_for(lambda g: g["type"] == "fill" and g["seq"] > f["seq"])
    assert server.engine.orders[b["order_id"]].remaining == 4 * LOT  # b is first now
    assert server.engine.orders[a2].remaining == 2 * LOT
    for c in (mm, tk):
        await c.close()


async def test_modify_size_is_the_open_size_and_client_ids_are_per_market(
        server: MatcherServer) -> None:
    mm, tk = await Client.open(server.url), await Client.open(server.url)
    await mm.login(USERS[0])
    await tk.login(USERS[1])
    oid = (await mm.request("place", client_id=7, **signed_order(
        USERS[0], False, ETH_PX, 10 * LOT)))["result"]["order_id"]
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                6 * LOT)))["ok"]
    r = await mm.request("modify", order_id=oid, size=5 * LOT)  # 4 open: not a total of 5
    assert r["code"] == "BAD_SIZE"
    assert (await mm.request("modify", order_id=oid, size=4 * LOT))["ok"]  # the same: accepted
    assert (await mm.request("modify", order_id=oid, size=3 * LOT))["ok"]
    rec = server.engine.orders[oid]
    assert (rec.filled, rec.remaining) == (6 * LOT, 3 * LOT)
    # client id 7 is live on market 0; market 1 takes it too, and a cancel names the market
    btc = (await mm.request("place", client_id=7, **signed_order(
        USERS[0], True, 59_000 * 10**8, 10_000, market=1)))["result"]["order_id"]
    assert (await mm.request("cancel", sub=0, market=1, client_id=7))["result"]["order_id"] == btc
    assert (await mm.request("cancel", client_id=7))["result"]["order_id"] == oid  # market 0
    for c in (mm, tk):
        await c.close()
