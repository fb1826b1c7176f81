"""Audit of the L2 channel under load: after a burst of random orders, cancels, modifies and
mass cancels from several connections, a client that applies the snapshot and the deltas holds
exactly the engine's top of book (and what a fresh snapshot says), every delta's ``prev_seq`` is
the ``seq`` of the message before it, and the same holds for a client that unsubscribed and
subscribed again, and one that reconnected, in the middle of the burst."""
from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order

DEPTH = 50


class BookFollower:
    """Applies ``book.0`` messages the way docs/api.md says a client must, asserting the seq
    chain as it goes."""

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.seq: int | None = None
        self.applied = 0

    def apply(self, f: dict[str, Any]) -> None:
        if f["kind"] == "snapshot":
            assert f["prev_seq"] == f["seq"]
            self.bids = {p: s for p, s in f["bids"]}
            self.asks = {p: s for p, s in f["asks"]}
        else:
            assert self.seq is not None and f["prev_seq"] == self.seq, (f, self.seq)
            assert f["seq"] == f["prev_seq"] + 1
            for side, levels in ((self.bids, f["bids"]), (self.asks, f["asks"])):
                for p, s in levels:
                    assert s >= 0
                    if s:
                        side[p] = s
                    else:
                        assert p in side, ("removal of a level never sent", p)
                        del side[p]
        self.seq = f["seq"]
        self.applied += 1

    def drain(self, c: Client) -> None:
        """Apply every buffered book frame of ``c`` in arrival order."""
        for f in [f for f in c.frames if f.get("type") == "book"]:
            c.frames.remove(f)
            self.apply(f)


def engine_top(server: MatcherServer) -> tuple[dict[int, int], dict[int, int]]:
    b, a = server.engine.books[0].depth(DEPTH)
    return dict(b), dict(a)


async def trader(server: MatcherServer, i: int, rng: random.Random, n: int) -> None:
    c = await Client.open(server.url)
    assert (await c.login(USERS[i]))["ok"]
    live: list[int] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55 or not live:
            is_buy = rng.random() < 0.5
            # 130 ticks each side of the oracle: more levels than the 50-level window
            px = ETH_PX + (-1 if is_buy else 1) * rng.randint(-3, 130) * TICK
            tif = rng.choice(["GTC", "GTC", "GTC", "IOC", "POST_ONLY"])
            resp = await c.request("place", tif=tif, **signed_order(
                USERS[i], is_buy, px, rng.randint(1, 20) * LOT))
            if resp["ok"] and resp["result"]["order_id"] in server.engine.orders:
                live.append(resp["result"]["order_id"])
        elif r < 0.8:
            resp = await c.request("cancel", order_id=live.pop(rng.randrange(len(live))))
        elif r < 0.95:
            oid = rng.choice(live)
            resp = await c.request("modify", order_id=oid, size=LOT)
        else:
            resp = await c.request("cancel_all", sub=0)
            live.clear()
        assert resp["type"] == "response"
    await c.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_book_followers_match_the_engine_after_a_burst(server: MatcherServer,
                                                             seed: int) -> None:
    rng = random.Random(seed)
    steady = await Client.open(server.url)
    assert (await steady.request("subscribe", channels=["book.0"]))["ok"]
    flapper = await Client.open(server.url)
    assert (await flapper.request("subscribe", channels=["book.0"]))["ok"]
    mover = await Client.open(server.url)
    assert (await mover.request("subscribe", channels=["book.0"]))["ok"]
    f_steady, f_flap, f_move = BookFollower(), BookFollower(), BookFollower()
    # a resting book deeper than the window, so the burst moves levels in and out of it
    deep = await Client.open(server.url)
    assert (await deep.login(USERS[4]))["ok"]
    for k in range(2, 2 + DEPTH + 10):
        for is_buy in (True, False):
            px = ETH_PX + (-1 if is_buy else 1) * 2 * k * TICK
            assert (await deep.request("place", **signed_order(USERS[4], is_buy, px, LOT)))["ok"]

    async def flap() -> None:
        for _ in range(6):
            await asyncio.sleep(0.05)
            f_flap.drain(flapper)
            assert (await flapper.request("unsubscribe", channels=["book.0"]))["ok"]
            f_flap.drain(flapper)
            f_flap.seq = None  # the old stream is over; the next message must be a snapshot
            assert (await flapper.request("subscribe", channels=["book.0"]))["ok"]

    async def move() -> None:
        nonlocal mover
        for _ in range(3):
            await asyncio.sleep(0.08)
            f_move.drain(mover)
            await mover.close()
            mover = await Client.open(server.url)
            f_move.seq = None
            assert (await mover.request("subscribe", channels=["book.0"]))["ok"]

    await asyncio.gather(*(trader(server, i, random.Random(rng.random()), 120)
                           for i in range(4)), flap(), move())
    # every trader got all its responses, so every delta is on its way; a ping per follower
    # is answered after the frames queued before it
    for c in (steady, flapper, mover):
        assert (await c.request("ping"))["ok"]
    want = engine_top(server)
    for f, c in ((f_steady, steady), (f_flap, flapper), (f_move, mover)):
        f.drain(c)
        assert (f.bids, f.asks) == want
    assert f_steady.applied > 100  # the burst really moved the book
    fresh = await Client.open(server.url)
    assert (await fresh.request("subscribe", channels=["book.0"]))["ok"]
    f_fresh = BookFollower()
    f_fresh.apply(await fresh.wait_for(lambda f: f["type"] == "book"))
    assert (f_fresh.bids, f_fresh.asks) == want
    assert len(want[0]) <= DEPTH and len(want[1]) <= DEPTH
    full = server.engine.books[0].depth(10 * DEPTH)
    assert len(full[0]) > DEPTH and len(full[1]) > DEPTH
    for c in (steady, flapper, mover, fresh, deep):
        await c.close()
