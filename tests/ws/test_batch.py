"""``batch_place`` and ``batch_cancel`` over a real websocket: one frame, one response with each
item's own outcome in order, the items sequenced back to back, each journaled on its own; bad
batches refused whole with the engine unchanged."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from matcher.commands import CancelOrder, PlaceOrder
from matcher.journal import iter_journal
from matcher.limits import Limits
from matcher.server import MatcherServer
from matcher.ws_messages import MAX_BATCH
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, addr, signed_order, start_server


async def _client(server: MatcherServer, i: int = 0, **login: Any) -> Client:
    c = await Client.open(server.url)
    assert (await c.login(USERS[i], **login))["ok"]
    return c


def _item(i: int, px: int, size: int = 10 * LOT, **kw: Any) -> dict[str, Any]:
    return {**signed_order(USERS[i], True, px, size), **kw}


async def test_each_item_gets_its_own_result_in_order(server: MatcherServer,
                                                      tmp_path: Path) -> None:
    c = await _client(server)
    assert (await c.request("subscribe", channels=["orders"]))["ok"]
    good = _item(0, ETH_PX - 10 * TICK, client_id=1)
    forged = {**_item(0, ETH_PX - 11 * TICK), "signature": _item(1, ETH_PX - 11 * TICK)["signature"]}
    off_tick = _item(0, ETH_PX - 10 * TICK + 1)
    not_mine = _item(1, ETH_PX - 12 * TICK)
    dup_client_id = _item(0, ETH_PX - 13 * TICK, client_id=1)
    post_only = _item(0, ETH_PX - 14 * TICK, tif="POST_ONLY", client_id=2)
    r = await c.request("batch_place", orders=[good, forged, off_tick, not_mine, dup_client_id,
                                               post_only])
    assert r["ok"], r
    res = r["result"]["results"]
    assert [x["ok"] for x in res] == [True, False, False, False, False, True]
    assert [x.get("code") for x in res] == [None, "BAD_SIGNATURE", "OFF_TICK", "NOT_AUTHORISED",
                                            "DUPLICATE_CLIENT_ID", None]
    assert all(x["message"] for x in res if not x["ok"])
    # accepted items: live in the engine, with consecutive sequence numbers
    oids = [res[0]["order_id"], res[5]["order_id"]]
    assert all(o in server.engine.orders for o in oids)
    assert res[5]["seq"] == res[0]["seq"] + 1
    # each accepted order gets its OPEN update; nothing for the refused ones
    for oid in oids:
        up = await c.wait_for(lambda f, o=oid: f["type"] == "order" and f["order_id"] == o)
        assert up["status"] == "OPEN"
    assert len(server.engine.orders) == 2
    # journaled one record per accepted item, as two single places would be
    server.jengine.writer.sync(force=True)
    places = [rec for rec in iter_journal(tmp_path / "journal.bin") if isinstance(rec.cmd, PlaceOrder)]
    assert len(places) == 2
    await c.close()


async def test_items_are_sequenced_back_to_back(server: MatcherServer) -> None:
    """Another connection placing as fast as it can never gets a sequence number between two
    items of one batch."""
    a, b = await _client(server, 0), await _client(server, 1)
    stop = asyncio.Event()

    async def spam() -> None:
        k = 0
        while not stop.is_set() and k < 300:  # well inside b's rate limit and open-order bound
            await b.send_raw(json.dumps({"op": "place", "id": 10_000 + k,
                                         **signed_order(USERS[1], False, ETH_PX + (50 + k % 50) * TICK,
                                                        LOT)}))
            k += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(spam())
    try:
        for round_ in range(5):
            r = await a.request("batch_place", orders=[_item(0, ETH_PX - (20 + round_ * MAX_BATCH + i) * TICK)
                                                       for i in range(MAX_BATCH)])
            seqs = [x["seq"] for x in r["result"]["results"]]
            assert all(x["ok"] for x in r["result"]["results"]), r
            assert seqs == list(range(seqs[0], seqs[0] + MAX_BATCH))
    finally:
        stop.set()
        await task
    assert len([o for o in server.engine.orders.values() if o.acct[0] == addr(USERS[1])]) > 0
    await a.close()
    await b.close()


async def test_batch_cancel(server: MatcherServer) -> None:
    c = await _client(server)
    r = await c.request("batch_place", orders=[_item(0, ETH_PX - (10 + i) * TICK, client_id=100 + i)
                                               for i in range(3)])
    oids = [x["order_id"] for x in r["result"]["results"]]
    assert len(server.engine.orders) == 3
    r = await c.request("batch_cancel", cancels=[
        {"order_id": oids[0]}, {"sub": 0, "market": 0, "client_id": 101}, {"order_id": 999_999},
        {"sub": 0}, {"order_id": oids[0]}])
    assert r["ok"], r
    res = r["result"]["results"]
    assert [x["ok"] for x in res] == [True, True, False, False, False]
    assert [x.get("code") for x in res] == [None, None, "UNKNOWN_ORDER", "BAD_REQUEST", "UNKNOWN_ORDER"]
    assert [res[0]["order_id"], res[1]["order_id"]] == oids[:2]
    assert res[1]["seq"] == res[0]["seq"] + 1
    assert list(server.engine.orders) == [oids[2]]
    await c.close()


async def test_batch_placed_orders_belong_to_the_session(server: MatcherServer) -> None:
    """cancel_on_disconnect covers the orders a batch placed, as it covers single places."""
    c = await _client(server, cancel_on_disconnect=True)
    r = await c.request("batch_place", orders=[_item(0, ETH_PX - (10 + i) * TICK) for i in range(4)])
    assert all(x["ok"] for x in r["result"]["results"])
    assert len(server.engine.orders) == 4
    await c.close()
    for _ in range(100):
        if not server.engine.orders:
            break
        await asyncio.sleep(0.02)
    assert not server.engine.orders


async def test_bad_batches_are_refused_whole(server: MatcherServer) -> None:
    c = await _client(server)
    h = server.engine.state_hash()
    good = _item(0, ETH_PX - 10 * TICK)
    huge = _item(0, ETH_PX - 10 * TICK)
    huge["order"] = {**huge["order"], "price": 2**64}
    unknown_field = {**_item(0, ETH_PX - 10 * TICK), "colour": "red"}
    for fields, needle in [
        ({"orders": []}, "length >= 1"),
        ({"orders": [good] * (MAX_BATCH + 1)}, f"length <= {MAX_BATCH}"),
        ({"orders": [good, huge]}, "$.orders[1].order.price"),
        ({"orders": [good, unknown_field]}, "colour"),
        ({"orders": good}, "array"),
        ({}, "orders"),
    ]:
        r = await c.request("batch_place", **fields)
        assert not r["ok"] and r["code"] == "BAD_REQUEST", r
        assert needle in r["message"], (needle, r)
    r = await c.request("batch_cancel", cancels=[{"order_id": 2**64}])
    assert r["code"] == "BAD_REQUEST" and "$.cancels[0].order_id" in r["message"]
    assert server.engine.state_hash() == h and not server.engine.orders
    # not logged in
    anon = await Client.open(server.url)
    r = await anon.request("batch_place", orders=[good])
    assert r["code"] == "NOT_LOGGED_IN"
    r = await anon.request("batch_cancel", cancels=[{"order_id": 1}])
    assert r["code"] == "NOT_LOGGED_IN"
    assert server.engine.state_hash() == h
    # the connection is still usable
    r = await c.request("batch_place", orders=[good])
    assert r["result"]["results"][0]["ok"]
    await c.close()
    await anon.close()


async def test_each_item_counts_against_the_rate_limit(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path),
                             limits=Limits(msgs_per_s=0.01, burst=8, flood_disconnect_after=1000))
    try:
        c = await _client(srv)  # login + challenge: 2 of the 8 tokens
        h = srv.engine.state_hash()
        r = await c.request("batch_place", orders=[_item(0, ETH_PX - (10 + i) * TICK) for i in range(7)])
        assert r["code"] == "RATE_LIMITED" and "batch of 7" in r["message"], r
        assert srv.engine.state_hash() == h and not srv.engine.orders
        # the refused batch spent only its frame's token: 5 are left
        r = await c.request("batch_place", orders=[_item(0, ETH_PX - (10 + i) * TICK) for i in range(5)])
        assert r["ok"] and all(x["ok"] for x in r["result"]["results"]), r
        assert len(srv.engine.orders) == 5
        await c.close()
    finally:
        await srv.close()


async def test_a_batch_behind_queued_jobs_runs_as_one_job(server: MatcherServer) -> None:
    """With the engine queue non-empty the batch waits its turn as one job, then answers."""
    c = await _client(server)
    (conn,) = server.conns
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # an admin job at the queue's head, and the batch's frame handled before it runs
    assert server._defer((CancelOrder(server.next_req_id(), addr(USERS[0]), 424242, 0, 0, None,
                                      server.now()), None, None, fut))
    server._on_message(conn, json.dumps({"op": "batch_place", "id": 77, "orders": [
        _item(0, ETH_PX - (10 + i) * TICK) for i in range(3)]}))
    assert len(server._jobs) == 2 and not server.engine.orders
    r = await c.response(77)
    assert not (await fut).ack.ok
    seqs = [x["seq"] for x in r["result"]["results"]]
    assert seqs == list(range(seqs[0], seqs[0] + 3)) and len(server.engine.orders) == 3
    await c.close()


async def test_the_documented_response_matches_a_real_one(server: MatcherServer) -> None:
    from tests.ws.test_audit_api import API_MD, same_shape

    (doc,) = [json.loads(line) for line in API_MD.read_text().splitlines()
              if line.startswith('{"type": "response"') and '"results"' in line]
    c = await _client(server)
    r = await c.request("batch_place", orders=[_item(0, ETH_PX - 10 * TICK),
                                               _item(0, ETH_PX - 10 * TICK, size=10**9 * LOT)])
    assert [x["ok"] for x in r["result"]["results"]] == [True, False], r
    assert r["result"]["results"][1]["code"] == doc["result"]["results"][1]["code"]
    same_shape(doc["result"]["results"][0], r["result"]["results"][0], "$.results[0]")
    same_shape(doc["result"]["results"][1], r["result"]["results"][1], "$.results[1]")
    same_shape({k: v for k, v in doc.items() if k != "result"},
               {k: v for k, v in r.items() if k != "result"}, "$")
    await c.close()


async def test_batch_modify_requotes_in_one_frame(server: MatcherServer) -> None:
    c = await _client(server)
    r = await c.request("batch_place", orders=[_item(0, ETH_PX - (10 + i) * TICK, size=50 * LOT,
                                                     client_id=200 + i) for i in range(3)])
    a, b, d = [x["order_id"] for x in r["result"]["results"]]
    new_b = _item(0, ETH_PX - 20 * TICK, size=30 * LOT)
    r = await c.request("batch_modify", modifies=[
        {"order_id": a, "size": 20 * LOT},
        {"order_id": b, **new_b},
        {"order_id": 999_999, "size": LOT},
        {"order_id": d, "size": LOT, **_item(0, ETH_PX - 21 * TICK)},
        {"order_id": d, **_item(1, ETH_PX - 21 * TICK)},
        {"order_id": d},
    ])
    assert r["ok"], r
    res = r["result"]["results"]
    assert [x.get("code") for x in res] == [None, None, "UNKNOWN_ORDER", "BAD_REQUEST",
                                            "NOT_AUTHORISED", "BAD_REQUEST"]
    assert res[1]["seq"] == res[0]["seq"] + 1
    assert res[0]["order_id"] == a and server.engine.orders[a].remaining == 20 * LOT
    nb = res[1]["order_id"]
    assert b not in server.engine.orders and nb != b
    assert server.engine.orders[nb].price == ETH_PX - 20 * TICK
    assert server.engine.orders[nb].cid == 201  # the client id carries over
    assert server.engine.orders[d].remaining == 50 * LOT
    await c.close()


async def test_a_replace_of_an_order_an_earlier_item_created_is_fee_checked_against_it(
        server: MatcherServer) -> None:
    """A POST_ONLY order pays the maker fee, so a replacement whose fee cap covers only that
    is fine. Item 2 replaces the order item 1 created: its fee bound must be the one of that
    order when item 2 runs, not whatever the engine held when the frame arrived (it got
    FEE_TOO_HIGH). The same items one by one give the same answers."""
    maker_fee, taker_fee = server.engine.maker_fee, server.engine.taker_fee
    assert maker_fee < taker_fee
    cap = (maker_fee + taker_fee) // 2  # enough for a maker, not for a taker
    c = await _client(server)

    def sell(px: int) -> dict[str, Any]:
        return signed_order(USERS[0], False, ETH_PX + px * TICK, LOT, max_fee=cap)

    r = await c.request("place", tif="POST_ONLY", **sell(30))
    first = r["result"]["order_id"]
    r = await c.request("batch_modify", modifies=[{"order_id": first, **sell(31)},
                                                  {"order_id": first + 1, **sell(32)}])
    res = r["result"]["results"]
    assert [x["ok"] for x in res] == [True, True], res
    assert res[1]["order_id"] == first + 2 and server.engine.orders[first + 2].price == ETH_PX + 32 * TICK
    # the same order id twice: the second finds it replaced, as it would one by one
    r = await c.request("batch_modify", modifies=[{"order_id": first + 2, **sell(33)},
                                                  {"order_id": first + 2, **sell(34)}])
    res = r["result"]["results"]
    assert res[0]["ok"] and (res[1]["ok"], res[1]["code"]) == (False, "UNKNOWN_ORDER"), res
    r = await c.request("modify", order_id=first + 2, **sell(35))
    assert (r["ok"], r["code"]) == (False, "UNKNOWN_ORDER"), r
    # a GTC order's replacement still needs the taker fee: the engine's exact check
    r = await c.request("place", **signed_order(USERS[0], False, ETH_PX + 40 * TICK, LOT))
    r = await c.request("modify", order_id=r["result"]["order_id"], **sell(41))
    assert (r["ok"], r["code"]) == (False, "FEE_TOO_HIGH"), r
    await c.close()
