"""Audit: hypothesis drives ``batch_place`` / ``batch_cancel`` / ``batch_modify`` over a real
websocket (docs/api.md, "batch_place / batch_cancel / batch_modify").

1. Malformed batches (wrong JSON types for the item list or its items, unknown fields at either
   level, missing required item fields, negative or too-wide integers in any item field, 0 or
   more than ``MAX_BATCH`` items, deep nesting inside an item, non-hex signatures) get exactly
   one ``ok: false`` response with a documented code, the engine state hash is unchanged and
   the connection still answers a ping. The batches are otherwise real: applied, they would
   change the engine.
2. Well-formed batches of random items (valid, forged, off-tick, off-lot, zero-size, expired,
   someone else's, replayed nonces, a nonce repeated inside the batch, low fees, cancels by
   order id / client id of live, filled, cancelled and unknown orders, size decreases and
   cancel-replaces) get exactly one response listing one outcome per item, failures with a
   documented code and a message, the accepted items at consecutive seqs; and each item's
   outcome (ok, code, order id, seq) and the resulting state hash are those the same items
   produce sent one by one as ``place`` / ``cancel`` / ``modify`` to a second, identical server.
3. A batch of n items against a bucket with fewer than n tokens is refused whole
   (``RATE_LIMITED``) with nothing applied, and spends only its frame's token.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossbook.protocol_types import Order
from matcher.commands import Ack
from matcher.limits import Limits
from matcher.server import MatcherServer
from matcher.ws_messages import MAX_BATCH
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, addr, signed_order, start_server
from tests.ws.test_audit_fuzz import Rig

U64 = 2**64
U32 = 2**32
T0 = int(time.time())  # the servers' fixed clock: both of a pair see the same `now`
EXP = T0 + 3600
PING_ID = U64 - 1

# every code docs/api.md lists ("Error codes"): API layer, then engine / intake
API_CODES = {"MALFORMED_JSON", "BAD_REQUEST", "MESSAGE_TOO_LARGE", "RATE_LIMITED",
             "NOT_LOGGED_IN", "ALREADY_LOGGED_IN", "BAD_CHALLENGE", "LOGIN_EXPIRED",
             "BAD_SIGNATURE", "NOT_AUTHORISED", "UNKNOWN_CHANNEL", "TOO_MANY_SUBSCRIPTIONS",
             "SEQ_UNAVAILABLE", "OVERLOADED", "INTERNAL"}
ENGINE_CODES = {"BAD_SIGNATURE", "UNKNOWN_MARKET", "OFF_TICK", "OFF_LOT", "BAD_SIZE",
                "BAD_PRICE", "EXPIRED", "POST_ONLY_WOULD_CROSS", "INSUFFICIENT_MARGIN",
                "SETTLEMENT_LAG", "REPLAYED_NONCE", "TOO_MANY_OPEN_ORDERS", "UNKNOWN_ORDER",
                "DUPLICATE_CLIENT_ID", "NOT_AUTHORISED", "FEE_TOO_HIGH", "BAD_REQUEST",
                "ORACLE_UNAVAILABLE", "INSUFFICIENT_BALANCE", "UNKNOWN_ASSET", "REPLAYED",
                "STALE_SETTLEMENT", "HALTED"}
# what an item of a well-formed batch may get (INTERNAL is a server bug, never expected)
ITEM_CODES = ENGINE_CODES - {"REPLAYED", "STALE_SETTLEMENT", "INSUFFICIENT_BALANCE",
                             "UNKNOWN_ASSET"}
MALFORMED_CODES = {"BAD_REQUEST", "MALFORMED_JSON", "MESSAGE_TOO_LARGE"}
LIST_OF = {"batch_place": "orders", "batch_cancel": "cancels", "batch_modify": "modifies"}
SINGLE_OF = {"batch_place": "place", "batch_cancel": "cancel", "batch_modify": "modify"}

SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _order(user: int, is_buy: bool, px: int, size: int, nonce: int, **kw: Any) -> dict[str, Any]:
    kw.setdefault("expiry", EXP)
    return signed_order(USERS[user], is_buy, px, size, nonce=nonce, **kw)


async def _open(server: MatcherServer, user: int = 0) -> Client:
    c = await Client.open(server.url)
    assert (await c.login(USERS[user]))["ok"]
    return c


async def _exchange(c: Client, raw: str) -> list[dict[str, Any]]:
    """Send ``raw`` then a ping; the responses that came before the ping's (the ping must be
    answered: the connection is still usable)."""
    n = len(c.all)
    await c.send_raw(raw)
    pong = await c.request("ping", id=PING_ID)
    assert pong["ok"], pong
    return [f for f in c.all[n:] if f.get("type") == "response" and f.get("id") != PING_ID]


# ============================================================== 1. malformed batches

# resting order of the malformed-batch rig (a cancel / modify of it would change the engine)
RESTING = _order(0, False, ETH_PX + 5 * TICK, 5 * LOT, nonce=7)
# valid signed orders at fresh nonces: placed, each would change the engine
FRESH = [_order(0, i % 2 == 0, ETH_PX + (-30 + i if i % 2 == 0 else 30 + i) * TICK,
                (1 + i % 3) * LOT, nonce=100 + i)
         for i in range(MAX_BATCH + 1)]
U32_FIELDS = {"subaccount", "market", "max_fee_ppm", "sub"}
# fields where null is valid in some item type (`client_id`, a cancel's `order_id`, a modify's
# `size` / `order` / `signature`): never retyped to null
OPTIONAL = {"client_id", "size", "order", "signature", "order_id"}
DEEP = "__deep__"
HEX = re.compile(r"^0[xX][0-9a-fA-F]*$")  # the schema's hex pattern (a `signature` of any length)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig(RESTING, client_id=9, expire_tick_s=0)
    yield r
    r.close()


def _bad_int(field: str) -> st.SearchStrategy[Any]:
    top = U32 if field in U32_FIELDS else U64
    return st.one_of(st.integers(max_value=-1, min_value=-2**70),
                     st.integers(min_value=top, max_value=2**200), st.just(top))


def _bad_type(field: str, is_bool: bool) -> st.SearchStrategy[Any]:
    """A JSON value of the wrong type for ``field`` (never null where null is allowed)."""
    vals: list[st.SearchStrategy[Any]] = [
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8).filter(lambda s: not HEX.match(s)),
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(),
                                                             max_size=2)]
    vals.append(st.integers() if is_bool else st.booleans())
    if field not in OPTIONAL:
        vals.append(st.none())
    return st.one_of(*vals)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of the scalars and dicts below ``obj`` (lists by index)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,), v
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,), v
            yield from _paths(v, prefix + (i,))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


@st.composite
def malformed_batch(draw: st.DrawFn, rig_oid: int) -> tuple[str, int, str, str | None]:
    """(frame, id, how, where): a real batch with one thing broken; ``where`` is the JSON path
    the error message must name (when known)."""
    op = draw(st.sampled_from(sorted(LIST_OF)))
    n = draw(st.integers(min_value=1, max_value=MAX_BATCH))
    items: list[dict[str, Any]]
    if op == "batch_place":
        items = [{"client_id": 50 + i, **FRESH[i]} for i in range(n)]
    elif op == "batch_cancel":
        items = [{"order_id": rig_oid}] + [{"sub": 0, "market": 0, "client_id": 9}] * (n - 1)
    else:
        items = ([{"order_id": rig_oid, "size": LOT}]
                 + [{"order_id": rig_oid, **FRESH[i]} for i in range(1, n)])
    rid = draw(st.integers(min_value=1, max_value=U64 - 2))
    frame: dict[str, Any] = json.loads(json.dumps({"op": op, "id": rid, LIST_OF[op]: items}))
    lst = LIST_OF[op]
    how = draw(st.sampled_from(["list_type", "item_type", "field_type", "field_int",
                                "unknown_top", "unknown_item", "unknown_order", "missing",
                                "count", "deep", "non_hex", "missing_id"]))
    raw: str | None = None
    where: str | None = None
    if how == "list_type":
        frame[lst] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                    st.just(items[0]), st.booleans()))
    elif how == "item_type":
        frame[lst][draw(st.integers(0, n - 1))] = draw(st.one_of(
            st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
            st.booleans()))
    elif how in ("field_type", "field_int"):
        paths = [(p, v) for p, v in _paths(frame[lst]) if not isinstance(v, (dict, list))
                 and (how == "field_type" or (type(v) is int and p[-1] != "id"))]
        path, v = draw(st.sampled_from(paths))
        val = (_bad_int(path[-1]) if how == "field_int"
               else _bad_type(path[-1], type(v) is bool))
        _get(frame[lst], path[:-1])[path[-1]] = draw(val)
        where = f"$.{lst}[{path[0]}]" + "".join(f".{k}" for k in path[1:])
    elif how == "unknown_top":
        frame[draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in frame))] = \
            draw(st.integers())
    elif how in ("unknown_item", "unknown_order"):
        i = draw(st.integers(0, n - 1))
        target = frame[lst][i]
        where = f"$.{lst}[{i}]"
        if how == "unknown_order" and "order" in target:
            target = target["order"]
            where += ".order"
        target[draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in target))] = \
            draw(st.one_of(st.integers(min_value=0, max_value=5), st.none(), st.text(max_size=3)))
    elif how == "missing":
        required: list[tuple[Any, ...]] = []
        for i, it in enumerate(frame[lst]):
            if op == "batch_place":
                required += [(i, "order"), (i, "signature")]
            if op == "batch_modify":
                required.append((i, "order_id"))
            if "order" in it:
                required += [(i, "order", k) for k in it["order"]]
        if not required:  # a cancel item has no required field: drop the list itself
            del frame[lst]
        else:
            path = draw(st.sampled_from(required))
            del _get(frame[lst], path[:-1])[path[-1]]
    elif how == "count":
        frame[lst] = [] if draw(st.booleans()) else \
            (items * (MAX_BATCH // n + 2))[:draw(st.integers(MAX_BATCH + 1, 2 * MAX_BATCH))]
    elif how == "deep":
        paths = [p for p, v in _paths(frame[lst]) if not isinstance(v, list)]
        path = draw(st.sampled_from(paths))
        _get(frame[lst], path[:-1])[path[-1]] = DEEP
        depth = draw(st.integers(min_value=2, max_value=6000))
        inner = draw(st.sampled_from(["1", '"a"', "{}"]))
        brackets = draw(st.sampled_from(["[]", "{}"]))
        open_, close = ('[', ']') if brackets == "[]" else ('{"a":', '}')
        raw = json.dumps(frame).replace(json.dumps(DEEP), open_ * depth + inner + close * depth)
    elif how == "non_hex":
        with_sig = [i for i, it in enumerate(frame[lst]) if "signature" in it]
        if with_sig:
            i = draw(st.sampled_from(with_sig))
            frame[lst][i]["signature"] = draw(st.sampled_from(
                ["0x" + "zz" * 65, "ab" * 65, "0x" + "0g" * 65, "", "0x " + "00" * 64,
                 "0x" + "00" * 600]))
        else:
            frame[lst] = 5
    else:  # missing_id
        del frame["id"]
    return (raw if raw is not None else json.dumps(frame)), rid, how, where


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_malformed_batches_are_refused_whole(rig: Rig, data: st.DataObject) -> None:
    raw, rid, how, where = data.draw(malformed_batch(rig.oid))
    h = rig.server.engine.state_hash()
    got = rig.run(_exchange(rig.c, raw))
    assert len(got) == 1, (how, raw[:300], got)
    r = got[0]
    event(f"{how}: {r['code']}")
    assert r["ok"] is False and r["code"] in MALFORMED_CODES and r["message"], (how, raw[:300], r)
    if r["code"] == "BAD_REQUEST" and how not in ("deep", "missing_id"):
        assert r["id"] == rid, (how, raw[:300], r)
        assert where is None or f"`{where}`" in r["message"], (where, r)
    if how == "missing_id" or r["code"] != "BAD_REQUEST":
        assert r["id"] is None, (how, r)
    assert rig.server.engine.state_hash() == h, (how, raw[:300])
    assert rig.oid in rig.server.engine.orders
    assert rig.server.engine.orders[rig.oid].remaining == 5 * LOT


# ============================================================== 2. batch == one by one

# both servers of a pair get these first, as single places (fixed nonces 1..5):
SETUP = [
    (1, {**_order(1, False, ETH_PX + TICK, 5 * LOT, nonce=1)}),  # someone else's ask
    (1, {**_order(1, True, ETH_PX - TICK, 5 * LOT, nonce=2)}),  # someone else's bid
    (0, {"client_id": 1, **_order(0, True, ETH_PX - 3 * TICK, 10 * LOT, nonce=3)}),
    # POST_ONLY with a fee cap between the maker (200) and taker (500) fee: a replacement of it
    # passes the fee check only as a POST_ONLY order
    (0, {"client_id": 2, "tif": "POST_ONLY",
         **_order(0, False, ETH_PX + 3 * TICK, 10 * LOT, nonce=4, max_fee=300)}),
    (0, {"client_id": 3, **_order(0, True, ETH_PX - 4 * TICK, 10 * LOT, nonce=5)}),
]
MAX_OID = 40  # order ids drawn from 1..MAX_OID: live, filled, cancelled and unknown ones
# mostly the setup's own live orders and the next few ids (orders the batches make)
OIDS = st.one_of(st.sampled_from([3, 4, 5]), st.integers(1, 12), st.integers(1, MAX_OID))


class Pair:
    """Two identical fresh servers with a fixed clock: ``a`` gets batches, ``b`` the same items
    one by one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.servers: list[MatcherServer] = []
        self.clients: list[Client] = []

    async def start(self) -> None:
        for _ in range(2):
            # the fixed clock is this module's import time, minutes before this test in a full
            # run, while the client signs its login expiry from the wall clock: no upper bound
            s = await start_server(heartbeat_s=3600, expire_tick_s=0, max_login_expiry_s=10**9)
            s.clock = lambda: float(T0)
            self.servers.append(s)
            c0, c1 = await _open(s, 0), await _open(s, 1)
            for user, item in SETUP:
                r = await (c0 if user == 0 else c1).request("place", **item)
                assert r["ok"], r
            await c1.close()
            self.clients.append(c0)
        a, b = self.servers
        assert a.engine.state_hash() == b.engine.state_hash()

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for s in self.servers:
            await s.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


class Nonces:
    """Nonces of one example: fresh ones, and the ones already used (to replay)."""

    def __init__(self) -> None:
        self.next = 1000
        self.used = [1, 2, 3, 4, 5]

    def fresh(self) -> int:
        self.next += 1
        self.used.append(self.next)
        return self.next


KINDS = ["bad_sig", "zero_sig", "short_sig", "odd_hex", "off_tick", "off_lot", "zero_size",
         "zero_price", "expired", "other_owner", "replay", "replay_last", "low_fee",
         "unknown_market", "huge", "other_sub"]


@st.composite
def signed_item(draw: st.DrawFn, nonces: Nonces, replacement: bool = False) -> dict[str, Any]:
    """The ``order`` + ``signature`` (+ placement options) of one order, valid or broken in
    one way an item-level check catches. A fee cap between the maker and the taker fee
    (``mid_fee``) passes only for a POST_ONLY order, or the replacement of one: the engine
    decides that when the item runs (a batch once decided it when the frame arrived)."""
    kind = draw(st.sampled_from(["valid"] * (12 if replacement else 6) + KINDS + ["mid_fee"]))
    is_buy = draw(st.booleans())
    px = ETH_PX + draw(st.integers(-6, 6)) * TICK
    size = draw(st.integers(1, 12)) * LOT
    user, kw = 0, {}
    nonce = nonces.fresh()
    if kind == "off_tick":
        px += draw(st.integers(1, TICK - 1))
    elif kind == "off_lot":
        size += draw(st.integers(1, LOT - 1))
    elif kind == "zero_size":
        size = 0
    elif kind == "zero_price":
        px = 0
    elif kind == "expired":
        kw["expiry"] = draw(st.sampled_from([0, T0 - 1000, T0 - 1, T0]))
    elif kind == "other_owner":
        user = 1
    elif kind == "replay":
        nonce = draw(st.sampled_from(nonces.used))
    elif kind == "replay_last":  # the nonce of the order drawn just before (maybe in this batch)
        nonce = nonces.used[-2]
    elif kind == "low_fee":
        kw["max_fee"] = draw(st.integers(0, 199))
    elif kind == "mid_fee":
        kw["max_fee"] = draw(st.integers(200, 499))
    elif kind == "unknown_market":
        kw["market"] = draw(st.sampled_from([3, 99, U32 - 1]))
    elif kind == "huge":
        size = 10**9 * LOT
    elif kind == "other_sub":
        kw["sub"] = draw(st.integers(1, 3))
    item = _order(user, is_buy, px, size, nonce, **kw)
    if kind == "bad_sig":
        item["signature"] = _order(1, is_buy, px, size, nonce, **kw)["signature"]
    elif kind == "zero_sig":
        item["signature"] = "0x" + "00" * 65
    elif kind == "short_sig":
        item["signature"] = item["signature"][:draw(st.integers(2, 120)) // 2 * 2]
    elif kind == "odd_hex":
        item["signature"] = item["signature"][:-1]
    if draw(st.booleans()):
        item["tif"] = draw(st.sampled_from(["GTC", "IOC", "FOK", "POST_ONLY"]))
    if draw(st.booleans()):
        item["client_id"] = draw(st.integers(1, 6))
    if draw(st.integers(0, 3)) == 0:
        item["stp"] = draw(st.sampled_from(["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]))
    return item


@st.composite
def cancel_item(draw: st.DrawFn) -> dict[str, Any]:
    how = draw(st.sampled_from(["oid", "oid", "cid", "cid", "empty", "sub_only", "both"]))
    oid = draw(OIDS)
    cid = {"sub": draw(st.sampled_from([0, 0, 1])), "market": draw(st.sampled_from([0, 0, 1])),
           "client_id": draw(st.integers(1, 6))}
    return {"oid": {"order_id": oid}, "cid": cid, "empty": {}, "sub_only": {"sub": 0},
            "both": {"order_id": oid, **cid}}[how]


@st.composite
def modify_item(draw: st.DrawFn, nonces: Nonces) -> dict[str, Any]:
    how = draw(st.sampled_from(["size", "size", "replace", "replace", "replace", "both",
                                "no_sig", "neither", "sig_only"]))
    oid = draw(OIDS)
    size = draw(st.sampled_from([0, LOT // 2, LOT, 2 * LOT, 5 * LOT, 9 * LOT, 10 * LOT,
                                 11 * LOT, 50 * LOT]))
    if how == "size":
        return {"order_id": oid, "size": size}
    if how == "neither":
        return {"order_id": oid}
    new = draw(signed_item(nonces, replacement=True))
    new.pop("tif", None)
    new.pop("client_id", None)
    new.pop("stp", None)
    if how == "replace":
        return {"order_id": oid, **new}
    if how == "both":
        return {"order_id": oid, "size": size, **new}
    if how == "no_sig":
        return {"order_id": oid, "order": new["order"]}
    return {"order_id": oid, "signature": new["signature"]}


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, list[dict[str, Any]]]]:
    """1-3 well-formed batches of random items (later ones may name orders earlier ones made)."""
    nonces = Nonces()
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(sorted(LIST_OF)))
        item = {"batch_place": signed_item(nonces), "batch_cancel": cancel_item(),
                "batch_modify": modify_item(nonces)}[op]
        out.append((op, draw(st.lists(item, min_size=1, max_size=MAX_BATCH))))
    return out


def _outcome(r: dict[str, Any]) -> tuple[Any, ...]:
    if r["ok"]:
        return True, r["order_id"], r["seq"]
    return False, r["code"]


async def _compare(pair: Pair, plan: list[tuple[str, list[dict[str, Any]]]]) -> None:
    (a, b), (ca, cb) = pair.servers, pair.clients
    for k, (op, items) in enumerate(plan):
        rid = 5000 + k
        got = await _exchange(ca, json.dumps({"op": op, "id": rid, LIST_OF[op]: items}))
        assert len(got) == 1 and got[0]["id"] == rid, (op, got)
        r = got[0]
        assert r["ok"] is True, (op, items, r)
        res = r["result"]["results"]
        assert len(res) == len(items), (op, r)
        for x in res:
            if not x["ok"]:
                assert x["code"] in ITEM_CODES and x["message"], (op, x)
                assert set(x) == {"ok", "code", "message"}, x
            else:
                assert set(x) == {"ok", "order_id", "seq"}, x
        seqs = [x["seq"] for x in res if x["ok"]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, (op, res)
        # the same items one by one on the twin server
        singles = []
        for i, it in enumerate(items):
            s = await _exchange(cb, json.dumps({"op": SINGLE_OF[op], "id": 9000 + i, **it}))
            assert len(s) == 1 and s[0]["id"] == 9000 + i, s
            singles.append({"ok": True, **s[0]["result"]} if s[0]["ok"] else s[0])
        for x in res:
            event(f"{op}: {x.get('code', 'ok')}")
        want = [_outcome(s) for s in singles]
        have = [_outcome(x) for x in res]
        diff = [(i, items[i], have[i], want[i]) for i in range(len(items)) if have[i] != want[i]]
        assert not diff, (op, diff)
        assert a.engine.state_hash() == b.engine.state_hash(), (op, items)
        assert sorted(a.engine.orders) == sorted(b.engine.orders)


@settings(SETTINGS, max_examples=250)
@given(plan=batches())
def test_a_batch_does_what_its_items_one_by_one_do(loop: asyncio.AbstractEventLoop,
                                                   plan: list[tuple[str, list[dict[str, Any]]]]
                                                   ) -> None:
    pair = Pair(loop)
    try:
        loop.run_until_complete(pair.start())
        loop.run_until_complete(_compare(pair, plan))
    finally:
        loop.run_until_complete(pair.close())


# ============================================================== 3. rate limit


class RateRig:
    """A server whose bucket barely refills, with resting orders seeded in-process (no
    tokens spent) for cancels and modifies to target."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.server: MatcherServer | None = None

    async def start(self, burst: int) -> None:
        srv = await start_server(heartbeat_s=3600, expire_tick_s=0,
                                 limits=Limits(msgs_per_s=1e-6, burst=burst,
                                               flood_disconnect_after=10_000))
        self.server = srv
        self.oids: list[int] = []
        for i in range(MAX_BATCH):
            o = _order(0, True, ETH_PX - (10 + i) * TICK, 5 * LOT, nonce=200 + i)
            wo = o["order"]
            cmd = srv.intake.place(srv.next_req_id(), Order(
                wo["owner"], wo["subaccount"], wo["market"], wo["is_buy"], wo["reduce_only"],
                wo["price"], wo["size"], wo["nonce"], wo["expiry"], wo["max_fee_ppm"]),
                bytes.fromhex(o["signature"][2:]), now=srv.now())
            assert not isinstance(cmd, Ack), cmd
            res = await srv.submit(cmd)
            assert res.ack.ok, res.ack
            self.oids.append(res.ack.order_id)

    def items(self, op: str, n: int) -> list[dict[str, Any]]:
        if op == "batch_place":
            return [_order(0, False, ETH_PX + (10 + i) * TICK, LOT, nonce=300 + i)
                    for i in range(n)]
        if op == "batch_cancel":
            return [{"order_id": o} for o in self.oids[:n]]
        return [{"order_id": o, "size": LOT} for o in self.oids[:n]]


@settings(SETTINGS, max_examples=40)
@given(burst=st.integers(min_value=3, max_value=24), spent=st.integers(min_value=0, max_value=4),
       n=st.integers(min_value=1, max_value=MAX_BATCH),
       op=st.sampled_from(sorted(LIST_OF)))
def test_a_batch_beyond_the_tokens_is_refused_whole(loop: asyncio.AbstractEventLoop, burst: int,
                                                    spent: int, n: int, op: str) -> None:
    rr = RateRig(loop)

    async def go() -> None:
        await rr.start(burst)
        srv = rr.server
        assert srv is not None
        c = await _open(srv)  # login + challenge: 2 tokens
        for _ in range(spent):
            await c.request("ping")
        tokens = max(0, burst - 2 - spent)  # what the bucket holds (a refused ping is free)
        h = srv.engine.state_hash()
        rid = 77
        items: dict[str, Any] = {LIST_OF[op]: rr.items(op, n)}
        r = await c.request(op, id=rid, **items)
        if n <= tokens:
            assert r["ok"] and len(r["result"]["results"]) == n, r
            assert all(x["ok"] for x in r["result"]["results"]), r
            assert srv.engine.state_hash() != h
            await c.close()
            return
        assert (r["id"], r["ok"], r["code"]) == (rid, False, "RATE_LIMITED"), r
        assert srv.engine.state_hash() == h
        if tokens >= 1:
            assert f"batch of {n}" in r["message"], r
            tokens -= 1  # the refused frame spent one token, and only one
        # a batch of exactly the tokens left is taken, one more would not be
        if tokens >= 1:
            items = {LIST_OF[op]: rr.items(op, tokens)}
            r = await c.request(op, **items)
            assert r["ok"] and len(r["result"]["results"]) == tokens, (tokens, r)
            assert srv.engine.state_hash() != h
        r = await c.request("ping")
        assert r["code"] == "RATE_LIMITED", r
        await c.close()

    try:
        loop.run_until_complete(go())
    finally:
        if rr.server is not None:
            loop.run_until_complete(rr.server.close())
