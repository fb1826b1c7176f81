"""Relayer stream: every sequenced item in order, replayable from any unsettled seq, then live."""
from __future__ import annotations

import struct

from crossbook.batch_codec import decode_batch, encode_item
from crossbook.protocol_types import FillItem
from matcher.commands import ChainBatchSettled
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, USERS, Client, addr, signed_order, start_server


def decode(frame: dict) -> object:  # type: ignore[type-arg]
    data = bytes.fromhex(frame["data"][2:])
    first, items = decode_batch(struct.pack(">QH", frame["seq"], 1) + data)
    assert first == frame["seq"] and len(items) == 1
    return items[0]


async def make_fills(server: MatcherServer, n: int) -> None:
    mk = await Client.open(server.url)
    tk = await Client.open(server.url)
    await mk.login(USERS[2])
    await tk.login(USERS[3])
    for _ in range(n):
        assert (await mk.request("place", **signed_order(USERS[2], False, ETH_PX, 2 * LOT)))["ok"]
        assert (await tk.request("place", tif="IOC",
                                 **signed_order(USERS[3], True, ETH_PX, 2 * LOT)))["ok"]
    await mk.close()
    await tk.close()


async def test_stream_replay_and_live(server: MatcherServer) -> None:
    await make_fills(server, 5)
    assert server.engine.ledger.next_seq == 6
    rl = await Client.open(server.url)
    r = await rl.request("stream", from_seq=3)
    assert r["ok"] and r["result"]["next_seq"] == 6
    got = [await rl.wait_for(lambda f: f["type"] == "item") for _ in range(3)]
    assert [f["seq"] for f in got] == [3, 4, 5]
    for f in got:
        it = decode(f)
        assert isinstance(it, FillItem) and f["kind"] == 1
        # byte-identical to what a batch carries
        assert encode_item(it) == encode_item(server.engine.ledger.unsettled[f["seq"]].item)
        assert f["data"] == "0x" + encode_item(it).hex()
    # live items continue without a gap
    await make_fills(server, 2)
    live = [await rl.wait_for(lambda f: f["type"] == "item") for _ in range(2)]
    assert [f["seq"] for f in live] == [6, 7]
    assert decode(live[0]).taker.owner.lower() == addr(USERS[3])  # type: ignore[attr-defined]
    # a second relayer replays from 1
    r2 = await Client.open(server.url)
    assert (await r2.request("stream", from_seq=1))["ok"]
    seqs = [(await r2.wait_for(lambda f: f["type"] == "item"))["seq"] for _ in range(7)]
    assert seqs == list(range(1, 8))
    # after settlement the prefix is pruned: asking for it is a structured error
    res = await server.submit(ChainBatchSettled(server.next_req_id(), 1, 4, []))
    assert res.ack.ok
    r3 = await Client.open(server.url)
    r = await r3.request("stream", from_seq=2)
    assert not r["ok"] and r["code"] == "SEQ_UNAVAILABLE"
    r = await r3.request("stream", from_seq=5)
    assert r["ok"]
    assert (await r3.wait_for(lambda f: f["type"] == "item"))["seq"] == 5
    for c in (rl, r2, r3):
        await c.close()


async def test_stream_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), stream_token="s3cret")
    try:
        c = await Client.open(srv.url)
        assert (await c.request("stream", from_seq=1))["code"] == "NOT_AUTHORISED"
        assert (await c.request("stream", from_seq=1, token="s3cret"))["ok"]
        await c.close()
    finally:
        await srv.close()
