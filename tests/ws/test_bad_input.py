"""Every bad input gets a structured error; the connection and the engine stay up and the
engine state is unchanged (state_hash)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order


def order_fields(**over: Any) -> dict[str, Any]:
    f = signed_order(USERS[0], True, ETH_PX - TICK, 10 * LOT)
    f["order"].update(over)
    return f


RAW_CASES: list[tuple[str, str | bytes, str, Any]] = [
    ("not json", "{nope", "MALFORMED_JSON", None),
    ("binary garbage", b"\xff\xfe\x00", "MALFORMED_JSON", None),
    ("json array", "[1,2,3]", "BAD_REQUEST", None),
    ("no op", '{"id": 5}', "BAD_REQUEST", 5),
    ("unknown op", '{"op": "explode", "id": 6}', "BAD_REQUEST", 6),
    ("unknown field", '{"op": "ping", "id": 7, "extra": 1}', "BAD_REQUEST", 7),
    ("string id", '{"op": "ping", "id": "7"}', "BAD_REQUEST", None),
    ("negative id", '{"op": "ping", "id": -1}', "BAD_REQUEST", None),
    ("huge id", '{"op": "ping", "id": 1e400}', "BAD_REQUEST", None),
    ("float field", '{"op": "cancel", "id": 8, "order_id": 1.5}', "BAD_REQUEST", 8),
    ("bool field", '{"op": "cancel", "id": 9, "order_id": true}', "BAD_REQUEST", 9),
    ("huge int", '{"op": "cancel", "id": 10, "order_id": 123456789012345678901234567890}',
     "BAD_REQUEST", 10),
    ("sub above uint32", '{"op": "cancel_all", "id": 11, "sub": 4294967296}', "BAD_REQUEST", 11),
    ("empty channels", '{"op": "subscribe", "id": 12, "channels": []}', "BAD_REQUEST", 12),
    ("bad tif", None, "BAD_REQUEST", 13),
]


@pytest.mark.parametrize("name,raw,code,rid", RAW_CASES, ids=[c[0] for c in RAW_CASES])
async def test_raw_bad_input(server: MatcherServer, name: str, raw: str | bytes | None,
                             code: str, rid: Any) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[0])
    if raw is None:
        raw = json.dumps({"op": "place", "id": 13, "tif": "SOMETIMES", **order_fields()})
    h = server.engine.state_hash()
    await c.send_raw(raw)
    e = await c.wait_for(lambda f: f["type"] == "response")
    assert e["ok"] is False and e["code"] == code and e["id"] == rid and e["message"]
    assert (await c.request("ping"))["ok"]  # connection up
    assert server.engine.state_hash() == h
    await c.close()


ORDER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("zero size", {"size": 0}, "BAD_SIZE"),
    ("negative size", {"size": -5}, "BAD_REQUEST"),
    ("negative price", {"price": -1}, "BAD_REQUEST"),
    ("zero price", {"price": 0}, "BAD_PRICE"),
    ("off tick", {"price": ETH_PX - TICK + 1}, "OFF_TICK"),
    ("off lot", {"size": LOT + 1}, "OFF_LOT"),
    ("size above uint64", {"size": 2**64}, "BAD_REQUEST"),
    ("price as string", {"price": "300000000000"}, "BAD_REQUEST"),
    ("unknown market", {"market": 77}, "UNKNOWN_MARKET"),
    ("expired", {"expiry": 1}, "EXPIRED"),
    ("fee cap too low", {"max_fee_ppm": 1}, "FEE_TOO_HIGH"),
    ("owner not an address", {"owner": "0x1234"}, "BAD_REQUEST"),
    ("unknown order field", {"colour": "red"}, "BAD_REQUEST"),
    # fields changed after signing: the signature recovers someone else
    ("tampered price", {"price": ETH_PX - 2 * TICK}, "BAD_SIGNATURE"),
]


@pytest.mark.parametrize("name,over,code", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
async def test_bad_orders(server: MatcherServer, name: str, over: dict[str, Any],
                          code: str) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[0])
    h = server.engine.state_hash()
    r = await c.request("place", **order_fields(**over))
    assert r["ok"] is False and r["code"] == code, r
    assert (await c.request("ping"))["ok"]
    assert server.engine.state_hash() == h
    await c.close()


WIDTH_CASES: list[tuple[str, dict[str, Any], str]] = [
    # bounds inside int64 are decoding constraints (msgspec's message), uint64 is check_ranges'
    ("subaccount above uint32", {"order": {"subaccount": 2**32}}, "`$.order.subaccount`"),
    ("market above uint32", {"order": {"market": 2**32}}, "`$.order.market`"),
    ("fee cap above uint32", {"order": {"max_fee_ppm": 2**32}}, "`$.order.max_fee_ppm`"),
    ("nonce above uint64", {"order": {"nonce": 2**64}}, "`$.order.nonce`"),
    ("client id above uint64", {"client_id": 2**64}, "`$.client_id`"),
    ("id above uint64", {"id": 2**64}, "`$.id`"),
]


@pytest.mark.parametrize("name,over,where", WIDTH_CASES, ids=[c[0] for c in WIDTH_CASES])
async def test_field_width_errors_name_the_field(server: MatcherServer, name: str,
                                                 over: dict[str, Any], where: str) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[0])
    req: dict[str, Any] = {"op": "place", "id": 21, **order_fields(**over.get("order", {}))}
    req.update((k, v) for k, v in over.items() if k != "order")
    await c.send_raw(json.dumps(req))
    e = await c.wait_for(lambda f: f["type"] == "response")
    assert (e["ok"], e["code"]) == (False, "BAD_REQUEST"), e
    assert e["id"] == req["id"]
    assert where in e["message"], e
    await c.close()


@pytest.mark.parametrize("sig", ["0x" + "00" * 65, "0x" + "ab" * 64, "0xzz", "0x" + "11" * 65,
                                 "nothex"])
async def test_bad_signatures(server: MatcherServer, sig: str) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[0])
    h = server.engine.state_hash()
    f = order_fields()
    f["signature"] = sig
    r = await c.request("place", **f)
    assert r["ok"] is False and r["code"] in ("BAD_SIGNATURE", "BAD_REQUEST"), r
    assert server.engine.state_hash() == h
    # signed by an unapproved key for USERS[0]
    r = await c.request("place", **signed_order(USERS[0], True, ETH_PX - TICK, LOT,
                                                signer=USERS[1]))
    assert r["code"] == "BAD_SIGNATURE"
    assert server.engine.state_hash() == h
    assert (await c.request("ping"))["ok"]
    await c.close()


async def test_replayed_nonce(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[0])
    f = signed_order(USERS[0], True, ETH_PX - TICK, LOT, nonce=424242)
    assert (await c.request("place", **f))["ok"]
    h = server.engine.state_hash()
    r = await c.request("place", **f)  # the identical signed order again
    assert r["code"] == "REPLAYED_NONCE"
    r = await c.request("place", **signed_order(USERS[0], False, ETH_PX + TICK, LOT,
                                                nonce=424242))
    assert r["code"] == "REPLAYED_NONCE"
    assert server.engine.state_hash() == h
    await c.close()


async def test_not_logged_in_and_bad_modify(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    h = server.engine.state_hash()
    for op, kw in [("place", order_fields()), ("cancel", {"order_id": 1}),
                   ("cancel_all", {}), ("dead_man", {"timeout_ms": 10}),
                   ("modify", {"order_id": 1, "size": 1})]:
        r = await c.request(op, **kw)
        assert r["code"] == "NOT_LOGGED_IN", (op, r)
    await c.login(USERS[0])
    for kw in [{"order_id": 1}, {"order_id": 1, "size": LOT, **order_fields()}]:
        assert (await c.request("modify", **kw))["code"] == "BAD_REQUEST"
    assert (await c.request("modify", order_id=999, size=LOT))["code"] == "UNKNOWN_ORDER"
    assert (await c.request("cancel"))["code"] == "BAD_REQUEST"
    assert (await c.request("dead_man", timeout_ms=10**12))["code"] == "BAD_REQUEST"
    assert (await c.request("stream", from_seq=0))["code"] == "BAD_REQUEST"
    assert server.engine.state_hash() == h
    await c.close()


async def test_withdraw_and_transfer(server: MatcherServer) -> None:
    import time as _t

    from crossbook.protocol_types import Transfer, Withdrawal
    from tests.ws.helpers import DOMAIN, addr
    c = await Client.open(server.url)
    await c.login(USERS[0])
    await c.request("subscribe", channels=["positions"])
    w = Withdrawal(addr(USERS[0]), 0, 0, 5 * 10**6, 1, int(_t.time()) + 600)
    body = {"owner": w.owner, "subaccount": 0, "asset": 0, "amount": w.amount, "nonce": 1,
            "expiry": w.expiry}
    r = await c.request("withdraw", withdrawal=body,
                        signature="0x" + USERS[0].sign_withdrawal(DOMAIN, w).hex())
    assert r["ok"], r
    h = server.engine.state_hash()
    r = await c.request("withdraw", withdrawal=body,
                        signature="0x" + USERS[0].sign_withdrawal(DOMAIN, w).hex())
    assert r["code"] == "REPLAYED"
    r = await c.request("withdraw", withdrawal={**body, "amount": 2**200},
                        signature="0x" + "00" * 65)
    assert r["code"] == "BAD_REQUEST"
    assert server.engine.state_hash() == h
    t = Transfer(addr(USERS[0]), 0, 3, 0, 10**6, 2, int(_t.time()) + 600)
    r = await c.request("transfer", transfer={"owner": t.owner, "from_subaccount": 0,
                                              "to_subaccount": 3, "asset": 0,
                                              "amount": 10**6, "nonce": 2, "expiry": t.expiry},
                        signature="0x" + USERS[0].sign_transfer(DOMAIN, t).hex())
    assert r["ok"], r
    p = await c.wait_for(lambda f: f["type"] == "position" and f["sub"] == 3)
    assert p["quote"] == 10**6
    await c.close()


async def test_fragmented_message_answered_in_order(server: MatcherServer) -> None:
    """A message split over several frames takes websockets' own assembly path; a cancel sent
    right behind it in a single frame must still reach the engine after it."""
    c = await Client.open(server.url)
    await c.login(USERS[0])
    place = json.dumps({"op": "place", "id": 41, "client_id": 7, **order_fields()})
    await c.ws.send([place[:40], place[40:90], place[90:]])
    await c.ws.send(json.dumps({"op": "cancel", "id": 42, "client_id": 7}))
    placed, cancelled = await c.response(41), await c.response(42)
    assert placed["ok"] is True and cancelled["ok"] is True, (placed, cancelled)
    assert placed["result"]["order_id"] not in server.engine.orders
    await c.close()


async def test_text_frame_not_utf8_closes_1007(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    await c.ws.send(b'{"op": "ping", "id": 1, "x": "\xff"}', text=True)
    await c.ws.wait_closed()
    assert c.ws.close_code == 1007
    assert 1 not in c.responses
    assert (await (await Client.open(server.url)).request("ping"))["ok"]  # server still up
