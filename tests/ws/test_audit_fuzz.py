"""Audit: hypothesis sends random and malformed frames over a real websocket to a logged-in
connection that has a resting order: wrong JSON types, unknown and
missing fields, huge and negative integers, deep nesting anywhere in the frame, truncated
frames, wrong signatures, replayed nonces. Each frame gets exactly one response (before the
response to a ping sent behind it), with the documented code and ``id`` rule, the connection
stays usable and the engine state hash is unchanged. (tests/ws/test_bad_input.py has the
hand-written cases; this searches around them.)"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order, start_server

U64 = 2**64
# every code a malformed or refused frame may get from this connection (docs/api.md)
REJECT_CODES = {"MALFORMED_JSON", "BAD_REQUEST", "BAD_SIGNATURE", "NOT_AUTHORISED",
                "UNKNOWN_CHANNEL", "REPLAYED_NONCE", "UNKNOWN_ORDER", "UNKNOWN_MARKET",
                "OFF_TICK", "OFF_LOT", "BAD_SIZE", "BAD_PRICE", "EXPIRED", "FEE_TOO_HIGH",
                "ALREADY_LOGGED_IN", "BAD_CHALLENGE", "SEQ_UNAVAILABLE", "MESSAGE_TOO_LARGE"}


class Rig:
    """A server, one logged-in connection with a resting order, on a loop of its own (a
    hypothesis test body is synchronous)."""

    def __init__(self, placed: dict[str, Any] | None = None, client_id: int = 1,
                 **server: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: MatcherServer = self.run(start_server(heartbeat_s=3600, **server))
        self.c: Client = self.run(Client.open(self.server.url))
        assert self.run(self.c.login(USERS[0]))["ok"]
        self.placed = placed or signed_order(USERS[0], False, ETH_PX + TICK, 5 * LOT, nonce=777)
        r = self.run(self.c.request("place", client_id=client_id, **self.placed))
        assert r["ok"], r
        self.oid: int = r["result"]["order_id"]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.c.close())
        self.run(self.server.close())
        self.loop.close()

    async def exchange(self, raw: str) -> list[dict[str, Any]]:
        """Send ``raw`` then a ping; the responses that came before the ping's."""
        c = self.c
        n = len(c.all)
        await c.send_raw(raw)
        pong = await c.request("ping", id=U64 - 1)
        assert pong["ok"], pong
        return [f for f in c.all[n:] if f.get("type") == "response" and f is not pong
                and f.get("id") != U64 - 1]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def bad_scalar() -> st.SearchStrategy[Any]:
    """Values that fit no integer, bool or hex field of the API."""
    return st.one_of(
        st.integers(min_value=U64, max_value=2**300), st.integers(max_value=-1),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                             max_size=2),
        st.just(None))


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@st.composite
def mutated_request(draw: st.DrawFn) -> tuple[str, int]:
    """A valid signed place / cancel / modify / subscribe with one field broken."""
    base: dict[str, Any] = draw(st.sampled_from([
        {"op": "place", "id": 0, "tif": "GTC", **signed_order(USERS[0], True, ETH_PX - TICK,
                                                              LOT, nonce=900)},
        {"op": "cancel", "id": 0, "order_id": 1},
        {"op": "modify", "id": 0, "order_id": 1, "size": LOT},
        {"op": "subscribe", "id": 0, "channels": ["book.0"]},
        {"op": "dead_man", "id": 0, "timeout_ms": 1000},
    ]))
    base = json.loads(json.dumps(base))
    rid = draw(st.integers(min_value=1, max_value=U64 - 2))
    base["id"] = rid
    target: dict[str, Any] = base["order"] if "order" in base and draw(st.booleans()) else base
    keys = [k for k in target if k not in ("op", "id")]
    how = draw(st.sampled_from(["retype", "unknown", "drop"]))
    if how == "retype" and keys:
        k = draw(st.sampled_from(keys))
        v = draw(bad_scalar())
        if k in ("is_buy", "reduce_only"):
            v = draw(st.one_of(st.integers(), st.text(max_size=3), st.just(None)))
        target[k] = v
    elif how == "drop" and keys and target is not base:
        del target[draw(st.sampled_from(keys))]
    else:
        target[draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in target))] = \
            draw(bad_scalar())
    return json.dumps(base), rid


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=mutated_request())
def test_broken_fields_are_refused_with_the_id(rig: Rig, case: tuple[str, int]) -> None:
    raw, rid = case
    h = rig.server.engine.state_hash()
    got = rig.run(rig.exchange(raw))
    assert len(got) == 1, (raw, got)
    r = got[0]
    assert r["ok"] is False and r["code"] in REJECT_CODES and r["message"], (raw, r)
    assert r["id"] == rid, (raw, r)
    assert rig.server.engine.state_hash() == h


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(depth=st.integers(min_value=2, max_value=7000),
       where=st.sampled_from(["first", "last", "id", "channels", "dict"]))
def test_deep_nesting_anywhere_gets_one_structured_answer(rig: Rig, depth: int,
                                                          where: str) -> None:
    raw = {"first": '{"x": %s, "op": "ping", "id": 5}' % nested(depth),
           "last": '{"op": "ping", "id": 5, "x": %s}' % nested(depth),
           "id": '{"op": "ping", "id": %s}' % nested(depth),
           "channels": '{"op": "subscribe", "id": 5, "channels": %s}' % nested(depth, '"a"'),
           "dict": '{"x": %s1%s, "op": "ping", "id": 5}' % ('{"a": ' * (depth // 4 + 1),
                                                            "}" * (depth // 4 + 1))}[where]
    h = rig.server.engine.state_hash()
    got = rig.run(rig.exchange(raw))
    assert len(got) == 1, (where, depth, got)
    assert got[0]["ok"] is False and got[0]["code"] == "BAD_REQUEST", got
    assert got[0]["id"] in (5, None)
    assert rig.server.engine.state_hash() == h


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_frames_that_are_not_json_are_malformed(rig: Rig, data: st.DataObject) -> None:
    good = json.dumps({"op": "place", "id": 3, "client_id": 2,
                       **signed_order(USERS[0], True, ETH_PX - 2 * TICK, LOT, nonce=901)})
    cut = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    tail = data.draw(st.sampled_from(["", "x", "NaN", "}", ",", "\x00"]))
    raw = good[:cut] + tail
    try:
        json.loads(raw)
        return  # a prefix that happens to be JSON (not reachable for this frame)
    except ValueError:
        pass
    h = rig.server.engine.state_hash()
    got = rig.run(rig.exchange(raw))
    assert len(got) == 1, (raw, got)
    assert (got[0]["code"], got[0]["id"]) == ("MALFORMED_JSON", None), (raw, got)
    assert rig.server.engine.state_hash() == h


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**100, max_value=2**100),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=30))
def test_any_json_value_is_a_bad_request(rig: Rig, value: Any) -> None:
    h = rig.server.engine.state_hash()
    got = rig.run(rig.exchange(json.dumps(value)))
    assert len(got) == 1 and got[0]["code"] == "BAD_REQUEST", (value, got)
    assert rig.server.engine.state_hash() == h


def test_wrong_signature_and_replayed_nonce(rig: Rig) -> None:
    h = rig.server.engine.state_hash()
    placed = json.loads(json.dumps(rig.placed))
    for sig, code in (("0x" + "00" * 65, "BAD_SIGNATURE"),
                      (signed_order(USERS[1], False, ETH_PX + TICK, 5 * LOT,
                                    nonce=777)["signature"], "BAD_SIGNATURE")):
        got = rig.run(rig.exchange(json.dumps({"op": "place", "id": 8, **placed,
                                               "signature": sig})))
        assert [(g["id"], g["code"]) for g in got] == [(8, code)]
    got = rig.run(rig.exchange(json.dumps({"op": "place", "id": 9, **placed})))
    assert [(g["id"], g["code"]) for g in got] == [(9, "REPLAYED_NONCE")]
    assert rig.server.engine.state_hash() == h
    assert rig.oid in rig.server.engine.orders
