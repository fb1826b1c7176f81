"""Property: the SDK's order table (``Client.orders``) is exactly the owner's live orders in the
matcher after any sequence of single and batch places, cancels and modifies, some of which fill
at once against resting liquidity (their updates may arrive before a batch's response) and some
of which are refused. Real server and client over loopback; hypothesis picks the operations."""
from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbook.sdk import Client, ModifyRequest, NonceManager, OrderRequest, Rejected
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, addr, start_server

ME = addr(USERS[0])

# an operation: (kind, args); order references are indices into the client's table at that time
price_off = st.integers(-8, 8)  # ticks from ETH_PX; the maker rests asks at +1..+4, bids at -1..-4
size = st.integers(1, 3)
tif = st.sampled_from(["GTC", "GTC", "IOC", "POST_ONLY"])
place = st.tuples(st.just("place"), st.tuples(st.booleans(), price_off, size, tif))
batch_place = st.tuples(st.just("batch_place"),
                        st.lists(st.tuples(st.booleans(), price_off, size, tif), min_size=1, max_size=6))
cancel = st.tuples(st.just("cancel"), st.integers(0, 50))
batch_cancel = st.tuples(st.just("batch_cancel"), st.lists(st.integers(0, 50), min_size=1, max_size=5))
modify = st.tuples(st.just("modify"), st.tuples(st.integers(0, 50), st.one_of(st.none(), price_off), size))
batch_modify = st.tuples(st.just("batch_modify"),
                         st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), price_off), size),
                                  min_size=1, max_size=4))
ops = st.lists(st.one_of(place, batch_place, cancel, batch_cancel, modify, batch_modify),
               min_size=1, max_size=12)


class Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.loop.close()


def _req(is_buy: bool, off: int, n: int, tif: str) -> OrderRequest:
    return OrderRequest(0, is_buy, ETH_PX + off * TICK, n * LOT, tif=tif)


async def _apply(c: Client, op: tuple[str, Any]) -> None:
    kind, arg = op
    live = sorted(c.orders)

    def pick(i: int) -> int:
        return live[i % len(live)] if live else 999_999  # an unknown id when nothing is live

    try:
        if kind == "place":
            await c.place(0, arg[0], ETH_PX + arg[1] * TICK, arg[2] * LOT, tif=arg[3])
        elif kind == "batch_place":
            await c.batch_place([_req(*a) for a in arg])
        elif kind == "cancel":
            await c.cancel(pick(arg))
        elif kind == "batch_cancel":
            await c.batch_cancel([pick(i) for i in arg])
        elif kind == "modify":
            oid = pick(arg[0])
            if arg[1] is None or oid not in c.orders:
                await c.modify(oid, size=arg[2] * LOT)
            else:
                await c.modify(oid, price=ETH_PX + arg[1] * TICK, size=arg[2] * LOT)
        else:
            changes = []
            for i, off, n in arg:
                oid = pick(i)
                changes.append(ModifyRequest(oid, size=n * LOT) if off is None or oid not in c.orders
                               else ModifyRequest(oid, price=ETH_PX + off * TICK, size=n * LOT))
            await c.batch_modify(changes)
    except Rejected:
        pass  # refusals are part of the flow; the table must stay right through them


async def _scenario(plan: list[tuple[str, Any]]) -> None:
    server: MatcherServer = await start_server(heartbeat_s=3600)
    mm = await Client.connect(server.url, nonces=NonceManager(start=1))
    c = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await mm.login(USERS[1])
        await mm.batch_place([OrderRequest(0, k > 0, ETH_PX - k * TICK, 2 * LOT)
                              for k in (1, 2, 3, 4, -1, -2, -3, -4)])
        await c.login(USERS[0])
        await c.subscribe(["orders"])
        for op in plan:
            await _apply(c, op)
            await c.ping()  # every order update sent before the pong has been read
            engine_live = {oid for oid, o in server.engine.orders.items() if o.acct[0] == ME}
            assert set(c.orders) == engine_live, (op, sorted(c.orders), sorted(engine_live))
    finally:
        await c.close()
        await mm.close()
        await server.close()


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=ops)
def test_the_client_order_table_is_the_engines(rig: Rig, plan: list[tuple[str, Any]]) -> None:
    rig.run(_scenario(plan))
