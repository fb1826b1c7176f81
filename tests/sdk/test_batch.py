"""The SDK's batch_place / batch_cancel on the server's batch ops: frames of the server's
``max_batch``, one result per order in order, the client's order table right although a batch's
updates arrive before its response, and a frame refused whole."""
from __future__ import annotations

from pathlib import Path

from crossbook.sdk import Client, ModifyRequest, NonceManager, OrderRequest, Rejected
from matcher.limits import Limits
from matcher.server import MatcherServer
from tests.ws.helpers import until
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, start_server


async def test_batches_of_max_batch_and_the_order_table(server: MatcherServer) -> None:
    mm = await Client.connect(server.url, nonces=NonceManager(start=1))
    c = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await mm.login(USERS[1])
        await c.login(USERS[0])
        max_batch = int(c.hello["limits"]["max_batch"])
        assert max_batch == 20
        await c.subscribe(["orders"])
        for k in range(5):
            await mm.place(0, False, ETH_PX + (k + 1) * TICK, LOT)
        # 5 IOC buys that fill at once (their FILLED comes before their frame's response),
        # 39 resting bids, one refused order: 45 orders in 3 frames
        reqs = [OrderRequest(0, True, ETH_PX + 10 * TICK, LOT, tif="IOC") for _ in range(5)]
        reqs += [OrderRequest(0, True, ETH_PX - (10 + i) * TICK, LOT, client_id=i) for i in range(39)]
        reqs.insert(25, OrderRequest(0, True, ETH_PX - 5 * TICK, 0))
        seq_before = server.engine.cmd_seq
        res = await c.batch_place(reqs)
        assert len(res) == 45
        bad = [i for i, x in enumerate(res) if isinstance(x, Rejected)]
        assert bad == [25] and isinstance(res[25], Rejected) and res[25].code == "BAD_SIZE"
        acks = [x for x in res if not isinstance(x, Rejected)]
        assert [a.seq for a in acks] == sorted(a.seq for a in acks)
        assert acks[-1].seq - seq_before == 44  # every accepted order took one seq
        assert all(a.order is not None for a in acks)
        resting = {a.order_id for a in acks[5:]}
        assert len(resting) == 39 and resting == set(server.engine.orders) - {
            oid for oid, o in server.engine.orders.items() if o.acct[0] != c.owner}
        # the filled IOCs are not in the table, the resting bids are
        await until(lambda: set(c.orders) == resting)
        cres = await c.batch_cancel(sorted(resting) + [999_999])
        assert [isinstance(x, Rejected) for x in cres] == [False] * 39 + [True]
        assert isinstance(cres[-1], Rejected) and cres[-1].code == "UNKNOWN_ORDER"
        assert not c.orders
        assert not [o for o in server.engine.orders.values() if o.acct[0] == c.owner]
    finally:
        await c.close()
        await mm.close()


async def test_a_frame_refused_whole_rejects_each_of_its_orders(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path),
                             limits=Limits(msgs_per_s=0.5, burst=30, flood_disconnect_after=1000))
    c = await Client.connect(srv.url, nonces=NonceManager(start=1))
    try:
        await c.login(USERS[0])
        res = await c.batch_place([OrderRequest(0, True, ETH_PX - (10 + i) * TICK, LOT)
                                   for i in range(40)])
        assert not any(isinstance(x, Rejected) for x in res[:20])
        assert all(isinstance(x, Rejected) and x.code == "RATE_LIMITED" for x in res[20:])
        assert len(srv.engine.orders) == 20 and len(c.orders) == 20
    finally:
        await c.close()
        await srv.close()


async def test_batch_modify_requotes(server: MatcherServer) -> None:
    c = await Client.connect(server.url, nonces=NonceManager(start=1))
    try:
        await c.login(USERS[0])
        await c.subscribe(["orders"])
        acks = await c.batch_place([OrderRequest(0, True, ETH_PX - (10 + i) * TICK, 10 * LOT,
                                                 client_id=i) for i in range(3)])
        a, b, d = [x.order_id for x in acks if not isinstance(x, Rejected)]
        res = await c.batch_modify([ModifyRequest(a, price=ETH_PX - 30 * TICK, size=5 * LOT),
                                    ModifyRequest(b, size=4 * LOT),
                                    ModifyRequest(999_999, size=LOT)])
        assert isinstance(res[2], Rejected) and res[2].code == "UNKNOWN_ORDER"
        new_a, same_b = res[0], res[1]
        assert not isinstance(new_a, Rejected) and not isinstance(same_b, Rejected)
        assert same_b.order_id == b and same_b.seq == new_a.seq + 1
        assert new_a.order is not None and new_a.order.price == ETH_PX - 30 * TICK
        eng = server.engine.orders
        assert a not in eng and eng[new_a.order_id].remaining == 5 * LOT
        assert eng[b].remaining == 4 * LOT and eng[d].remaining == 10 * LOT
        await until(lambda: set(c.orders) == {new_a.order_id, b, d})
        assert c.orders[new_a.order_id] == new_a.order
    finally:
        await c.close()
