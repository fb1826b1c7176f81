"""Audit of docs/api.md's examples against real frames: every server frame the document shows
as a JSON example is produced over a websocket and compared field by field (the same names,
the same JSON types; a documented ``null`` may be a value), and the subscribe result says
where a ``fills`` subscription starts (``fills_last``)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, addr, signed_order, start_server

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented_frames() -> dict[str, dict[str, Any]]:
    """The JSON examples of server frames in docs/api.md by ``type`` (``book`` by kind), the
    first of each; examples with elisions ("...") are not JSON and are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"```json\n(.*?)```", API_MD.read_text(), re.S):
        for chunk in re.split(r"\n(?=\{)", block.strip()):
            try:
                f = json.loads(chunk)
            except ValueError:
                continue
            if isinstance(f, dict) and "type" in f:
                key = f["type"] + ("." + f["kind"] if f["type"] == "book" else "")
                out.setdefault(key, f)
    return out


def same_shape(doc: Any, real: Any, where: str) -> None:
    """``real`` has ``doc``'s fields and JSON types (recursively; ``null`` in the doc stands
    for a value that may be absent)."""
    if doc is None:
        return
    assert type(real) is type(doc) or real is None and where.endswith(("best_bid", "best_ask")), \
        (where, doc, real)
    if isinstance(doc, dict):
        if where.endswith((".assets", ".markets", ".collateral")):
            assert all(k.isdigit() for k in real), (where, real)
            return  # keyed by id: the keys are data, not field names
        assert set(real) == set(doc), (where, sorted(set(real) ^ set(doc)))
        for k in doc:
            same_shape(doc[k], real[k], f"{where}.{k}")
    elif isinstance(doc, list) and doc and real:
        same_shape(doc[0], real[0], f"{where}[0]")


async def test_documented_frames_match_real_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(journal_dir=str(tmp_path), operator_token="tok", heartbeat_s=0.2)
    docs = documented_frames()
    real: dict[str, dict[str, Any]] = {}
    try:
        mm, tk = await Client.open(server.url), await Client.open(server.url)
        real["hello"] = mm.hello
        await mm.login(USERS[0])
        await tk.login(USERS[1])
        assert (await mm.request("subscribe", channels=[
            "book.0", "trades.0", "markets", "prices", "orders", "fills", "positions",
            "health"]))["ok"]
        r = await mm.request("place", client_id=7, **signed_order(USERS[0], False, ETH_PX,
                                                                  10 * LOT))
        real["response"] = r
        assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                    6 * LOT)))["ok"]
        ev = {"type": "batch_settled", "block_number": 9, "block_hash": "0x" + "ab" * 32,
              "log_index": 2, "tx_hash": "0x" + "cd" * 32, "first_seq": 1, "count": 1,
              "rejected": [[1, 7]]}
        assert (await tk.request("chain", token="tok", event=ev))["ok"]  # busts the fill
        await mm.wait_for(lambda f: f["type"] == "bust")
        await mm.wait_for(lambda f: f["type"] == "heartbeat", 2)
        assert (await mm.request("dead_man", timeout_ms=50))["ok"]
        await mm.wait_for(lambda f: f["type"] == "dead_man", 2)
        assert (await tk.request("halt", token="tok", reason="exchange maintenance"))["ok"]
        await mm.wait_for(lambda f: f["type"] == "halt")
        assert (await tk.request("halt", token="tok", reason=""))["ok"]
        for f in mm.all:
            key = f["type"] + ("." + f["kind"] if f["type"] == "book" else "")
            if key == "order" and f["status"] != "PARTIALLY_FILLED":
                continue  # the documented example is a partial fill
            real.setdefault(key, f)
        # a rejected response
        docs["response.rejected"] = next(
            json.loads(line) for line in API_MD.read_text().splitlines()
            if line.startswith('{"type": "response"') and '"ok": false' in line)
        real["response.rejected"] = await mm.request(
            "place", **signed_order(USERS[0], True, ETH_PX - TICK + 1, LOT))
        skipped = {"liquidated", "item", "stream_gap"}  # a chain liquidation; the relayer's
        missing = set(docs) - set(real) - skipped
        assert not missing, missing
        for key, doc in docs.items():
            if key in real:
                same_shape(doc, real[key], key)
        for c in (mm, tk):
            await c.close()
    finally:
        await server.close()


async def test_subscribe_says_where_fills_start(server: MatcherServer) -> None:
    mm, tk = await Client.open(server.url), await Client.open(server.url)
    await mm.login(USERS[0])
    await tk.login(USERS[1])
    r = await mm.request("subscribe", channels=["fills"])
    assert r["result"]["fills_last"] == 0  # no fill yet
    assert "fills_last" not in (await mm.request("subscribe", channels=["book.0"]))["result"]
    assert (await mm.request("place", **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
    assert (await tk.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX,
                                                                LOT)))["ok"]
    fill = await mm.wait_for(lambda f: f["type"] == "fill")
    # another connection of the owner starts after that fill: resuming there replays nothing
    again = await Client.open(server.url)
    await again.login(USERS[0])
    r = await again.request("subscribe", channels=["fills"])
    assert r["result"]["fills_last"] == fill["seq"]
    r = await again.request("subscribe", channels=["fills"], fills_after=fill["seq"])
    assert r["result"]["fills"] == {"after": fill["seq"], "replayed": 0, "complete": True}
    # the taker's own record is separate
    r = await tk.request("subscribe", channels=["fills"])
    assert r["result"]["fills_last"] == fill["seq"]
    assert server.hub.last_fill == {addr(USERS[0]): fill["seq"], addr(USERS[1]): fill["seq"]}
    for c in (mm, tk, again):
        await c.close()
