"""Place / cancel / modify with acks and order updates; fills on both parties' channels;
book snapshot + deltas with seq continuity; trades, positions, health, markets, prices."""
from __future__ import annotations

from typing import Any

from matcher.commands import SetOraclePrices
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, addr, signed_order


async def logged_in(server: MatcherServer, i: int, channels: list[str] | None = None) -> Client:
    c = await Client.open(server.url)
    assert (await c.login(USERS[i]))["ok"]
    if channels:
        assert (await c.request("subscribe", channels=channels))["ok"]
    return c


def apply_delta(levels: dict[int, int], changes: list[list[int]]) -> None:
    for px, sz in changes:
        if sz:
            levels[px] = sz
        else:
            levels.pop(px, None)


async def test_place_cancel_modify(server: MatcherServer) -> None:
    c = await logged_in(server, 0, ["orders"])
    r = await c.request("place", client_id=7, **signed_order(USERS[0], True, ETH_PX - 10 * TICK,
                                                             100 * LOT))
    assert r["ok"], r
    oid, seq = r["result"]["order_id"], r["result"]["seq"]
    assert oid > 0 and seq == server.engine.cmd_seq
    # the response comes before the order update on the same connection
    ri = next(i for i, f in enumerate(c.all) if f.get("id") == r["id"])
    up = await c.wait_for(lambda f: f["type"] == "order" and f["order_id"] == oid)
    assert c.all.index(up) > ri
    assert up["status"] == "OPEN" and up["remaining"] == 100 * LOT and up["client_id"] == 7
    # modify down (keeps priority)
    r = await c.request("modify", order_id=oid, size=40 * LOT)
    assert r["ok"] and r["result"]["order_id"] == oid
    up = await c.wait_for(lambda f: f["type"] == "order" and f["status"] == "MODIFIED")
    assert up["remaining"] == 40 * LOT
    # cancel-replace into a new signed order: the old id is cancelled, the new one opens
    r = await c.request("modify", order_id=oid, **signed_order(USERS[0], True,
                                                               ETH_PX - 12 * TICK, 50 * LOT))
    assert r["ok"] and r["result"]["order_id"] != oid, r
    await c.wait_for(lambda f: f["type"] == "order" and f["order_id"] == oid
                     and f["status"] == "CANCELLED")
    oid = r["result"]["order_id"]
    up = await c.wait_for(lambda f: f["type"] == "order" and f["status"] == "OPEN"
                          and f["order_id"] == oid)
    assert up["price"] == ETH_PX - 12 * TICK and up["client_id"] == 7
    # cancel by client id
    r = await c.request("cancel", sub=0, market=0, client_id=7)
    assert r["ok"] and r["result"]["order_id"] == oid
    up = await c.wait_for(lambda f: f["type"] == "order" and f["status"] == "CANCELLED")
    assert up["reason"] == "USER"
    assert not server.engine.orders
    # unknown order: structured reject
    r = await c.request("cancel", order_id=oid)
    assert not r["ok"] and r["code"] == "UNKNOWN_ORDER"
    await c.close()


async def test_cannot_touch_other_owner(server: MatcherServer) -> None:
    a = await logged_in(server, 0)
    b = await logged_in(server, 1)
    r = await a.request("place", **signed_order(USERS[0], False, ETH_PX + 5 * TICK, 10 * LOT))
    oid = r["result"]["order_id"]
    h = server.engine.state_hash()
    assert (await b.request("cancel", order_id=oid))["code"] == "NOT_AUTHORISED"
    # an order of USERS[0] submitted on USERS[1]'s session
    r = await b.request("place", **signed_order(USERS[0], False, ETH_PX + 5 * TICK, 10 * LOT))
    assert r["code"] == "NOT_AUTHORISED"
    assert server.engine.state_hash() == h
    await a.close()
    await b.close()


async def test_fill_reaches_both_parties(server: MatcherServer) -> None:
    mk = await logged_in(server, 0, ["orders", "fills", "positions", "health"])
    tk = await logged_in(server, 1, ["orders", "fills", "positions"])
    pub = await Client.open(server.url)
    assert (await pub.request("subscribe", channels=["trades.0", "markets"]))["ok"]
    m0 = await pub.wait_for(lambda f: f["type"] == "markets")
    assert m0["markets"][0]["tick_size"] == TICK
    # initial health snapshot for the deposited sub-account
    h0 = await mk.wait_for(lambda f: f["type"] == "health")
    assert h0["sub"] == 0 and h0["equity"] == 1_000_000 * 10**6
    r = await mk.request("place", **signed_order(USERS[0], False, ETH_PX, 100 * LOT))
    moid = r["result"]["order_id"]
    r = await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX + TICK,
                                                            60 * LOT))
    assert r["ok"], r
    toid = r["result"]["order_id"]
    fm = await mk.wait_for(lambda f: f["type"] == "fill")
    ft = await tk.wait_for(lambda f: f["type"] == "fill")
    assert fm["seq"] == ft["seq"] >= 1
    assert (fm["order_id"], fm["side"], fm["liquidity"]) == (moid, "sell", "maker")
    assert (ft["order_id"], ft["side"], ft["liquidity"]) == (toid, "buy", "taker")
    assert fm["price"] == ft["price"] == ETH_PX and fm["size"] == 60 * LOT
    tr = await pub.wait_for(lambda f: f["type"] == "trade")
    assert tr["seq"] == fm["seq"] and tr["taker_side"] == "buy"
    up = await mk.wait_for(lambda f: f["type"] == "order" and f["status"] == "PARTIALLY_FILLED")
    assert up["remaining"] == 40 * LOT
    await tk.wait_for(lambda f: f["type"] == "order" and f["order_id"] == toid
                      and f["status"] == "FILLED")
    pm = await mk.wait_for(lambda f: f["type"] == "position" and f["positions"])
    pt = await tk.wait_for(lambda f: f["type"] == "position" and f["positions"])
    assert pm["positions"][0]["size"] == -60 * LOT and pt["positions"][0]["size"] == 60 * LOT
    await mk.wait_for(lambda f: f["type"] == "health" and f["equity"] is not None
                      and f["equity"] < 1_000_000 * 10**6)
    mu = await pub.wait_for(lambda f: f["type"] == "markets" and f["markets"][0]["market"] == 0)
    assert mu["markets"][0]["best_ask"] == ETH_PX
    for c in (mk, tk, pub):
        await c.close()


async def test_book_snapshot_then_deltas(server: MatcherServer) -> None:
    mm = await logged_in(server, 0)
    await mm.request("place", **signed_order(USERS[0], True, ETH_PX - TICK, 10 * LOT))
    sub = await Client.open(server.url)
    assert (await sub.request("subscribe", channels=["book.0"]))["ok"]
    snap = await sub.wait_for(lambda f: f["type"] == "book")
    assert snap["kind"] == "snapshot" and snap["bids"] == [[ETH_PX - TICK, 10 * LOT]]
    bids = {p: s for p, s in snap["bids"]}
    asks = {p: s for p, s in snap["asks"]}
    last = snap["seq"]
    taker = await logged_in(server, 1)
    ops: list[tuple[Client, dict[str, Any]]] = [
        (mm, signed_order(USERS[0], True, ETH_PX - TICK, 5 * LOT)),
        (mm, signed_order(USERS[0], True, ETH_PX - 2 * TICK, 7 * LOT)),
        (mm, signed_order(USERS[0], False, ETH_PX + 3 * TICK, 9 * LOT)),
        (taker, signed_order(USERS[1], False, ETH_PX - TICK, 12 * LOT)),  # crosses the bids
    ]
    for c, o in ops:
        assert (await c.request("place", **o))["ok"]
    r = await mm.request("cancel_all", sub=0)
    assert r["ok"]
    # 5 changes -> 5 deltas, each continuing the previous seq
    for _ in range(5):
        d = await sub.wait_for(lambda f: f["type"] == "book")
        assert d["kind"] == "delta" and d["prev_seq"] == last and d["seq"] == last + 1
        last = d["seq"]
        apply_delta(bids, d["bids"])
        apply_delta(asks, d["asks"])
    b, a = server.engine.books[0].depth(50)
    assert bids == dict(b) and asks == dict(a)
    assert not sub.of_type("book")
    # a fresh subscriber gets a snapshot equal to the reconstruction
    s2 = await Client.open(server.url)
    await s2.request("subscribe", channels=["book.0"])
    snap2 = await s2.wait_for(lambda f: f["type"] == "book")
    assert {p: s for p, s in snap2["bids"]} == bids and {p: s for p, s in snap2["asks"]} == asks
    for c in (mm, sub, taker, s2):
        await c.close()


async def test_prices_channel_and_unsubscribe(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    assert (await c.request("subscribe", channels=["prices"]))["ok"]
    p0 = await c.wait_for(lambda f: f["type"] == "prices")
    assert p0["markets"]["0"] == ETH_PX
    await server.submit(SetOraclePrices(server.next_req_id(), {}, {0: ETH_PX + 100}, 0))
    p1 = await c.wait_for(lambda f: f["type"] == "prices")
    assert p1["markets"] == {"0": ETH_PX + 100}
    assert p1["unavailable_markets"] == [] and p1["unavailable_assets"] == []
    # the adapter starts refusing market 0's price: reduce-only mode
    mk = await Client.open(server.url)
    await mk.request("subscribe", channels=["markets"])
    await mk.wait_for(lambda f: f["type"] == "markets")
    await server.submit(SetOraclePrices(server.next_req_id(), {}, {}, 0, [], [0]))
    p2 = await c.wait_for(lambda f: f["type"] == "prices")
    assert p2["markets"] == {} and p2["unavailable_markets"] == [0]
    await mk.wait_for(lambda f: f["type"] == "markets" and any(
        x["market"] == 0 and x["oracle_price"] is None for x in f["markets"]))
    st = await c.request("status")
    assert st["result"]["reduce_only_markets"] == [0]
    late = await Client.open(server.url)
    await late.request("subscribe", channels=["prices"])
    p3 = await late.wait_for(lambda f: f["type"] == "prices")
    assert "0" not in p3["markets"] and p3["unavailable_markets"] == [0]
    for x in (mk, late):
        await x.close()
    await server.submit(SetOraclePrices(server.next_req_id(), {}, {0: ETH_PX}, 0))
    assert (await c.request("status"))["result"]["reduce_only_markets"] == []
    r = await c.request("unsubscribe", channels=["prices"])
    assert r["ok"] and r["result"]["channels"] == []
    r = await c.request("subscribe", channels=["book.99"])
    assert r["code"] == "UNKNOWN_CHANNEL"
    await c.close()


async def test_ping_and_heartbeat(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.ws.helpers import start_server
    srv = await start_server(journal_dir=str(tmp_path), heartbeat_s=0.05)
    try:
        c = await Client.open(srv.url)
        r = await c.request("ping")
        assert r["ok"] and r["result"]["ts_ms"] > 0
        hb = await c.wait_for(lambda f: f["type"] == "heartbeat", 2)
        assert hb["last_seq"] == 0
        pong = await c.ws.ping()
        await pong
        await c.close()
    finally:
        await srv.close()
