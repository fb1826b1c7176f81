"""The operator `halt` op over a real websocket: token-guarded; while halted, places and
modifies are refused HALTED with the reason and nothing changes; cancels still work; `status`
shows the halt; an empty reason resumes trading (journal replay and snapshots:
tests/matcher/test_halt.py)."""
from __future__ import annotations

from pathlib import Path

from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, Client, signed_order, start_server
from tests.ws.test_orders import logged_in

TOKEN = "op-secret"


async def test_halt_refuses_orders_until_resumed(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        op = await Client.open(srv.url)
        mm = await logged_in(srv, 0, ["orders"])
        r = await mm.request("place", **signed_order(USERS[0], True, ETH_PX - 10 * TICK, 10 * LOT))
        assert r["ok"], r
        live = r["result"]["order_id"]
        r = await op.request("halt", token="wrong", reason="x")
        assert (r["ok"], r["code"]) == (False, "NOT_AUTHORISED")
        r = await op.request("halt", token=TOKEN, reason="x" * 201)
        assert (r["ok"], r["code"]) == (False, "BAD_REQUEST")
        assert srv.engine.halt_reason is None
        r = await op.request("halt", token=TOKEN, reason="chain reorg below block 812")
        assert r["ok"] and r["result"]["seq"] == srv.engine.cmd_seq, r
        st = await op.request("status")
        assert st["result"]["halted"] == "chain reorg below block 812"
        h = srv.engine.state_hash()
        r = await mm.request("place", **signed_order(USERS[0], False, ETH_PX + 10 * TICK, 10 * LOT))
        assert (r["ok"], r["code"]) == (False, "HALTED")
        assert r["message"] == "trading halted: chain reorg below block 812"
        r = await mm.request("modify", order_id=live,
                             **signed_order(USERS[0], True, ETH_PX - 11 * TICK, 10 * LOT))
        assert (r["ok"], r["code"]) == (False, "HALTED")
        assert srv.engine.state_hash() == h
        # pulling quotes still works
        r = await mm.request("cancel", order_id=live)
        assert r["ok"], r
        assert live not in srv.engine.orders
        r = await op.request("halt", token=TOKEN, reason="")
        assert r["ok"], r
        assert (await op.request("status"))["result"]["halted"] is None
        r = await mm.request("place", **signed_order(USERS[0], False, ETH_PX + 10 * TICK, 10 * LOT))
        assert r["ok"], r
        await op.close()
        await mm.close()
    finally:
        await srv.close()


async def _cli(*args: str, token: str) -> tuple[int, str]:
    """``crossbook halt ...`` as an operator runs it (a separate process)."""
    import asyncio
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crossbook.cli", "halt", *args, env={**os.environ, "CROSSBOOK_OPERATOR_TOKEN": token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_crossbook_halt_command(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        code, out = await _cli("--reason", "exchange maintenance", "--matcher-url", srv.url, token=TOKEN)
        assert (code, out.strip()) == (0, "trading halted: exchange maintenance")
        assert srv.engine.halt_reason == "exchange maintenance"
        code, out = await _cli("--resume", "--matcher-url", srv.url, token="wrong")
        assert code == 1 and "NOT_AUTHORISED" in out and srv.engine.halt_reason is not None
        code, out = await _cli("--resume", "--matcher-url", srv.url, token=TOKEN)
        assert (code, out.strip()) == (0, "trading resumed")
        assert srv.engine.halt_reason is None
    finally:
        await srv.close()


async def test_markets_channel_announces_the_halt(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        op = await Client.open(srv.url)
        watcher = await Client.open(srv.url)
        assert (await watcher.request("subscribe", channels=["markets"]))["ok"]
        await watcher.wait_for(lambda f: f["type"] == "markets")
        assert (await op.request("halt", token=TOKEN, reason="exchange maintenance"))["ok"]
        got = await watcher.wait_for(lambda f: f["type"] == "halt")
        assert got == {"type": "halt", "channel": "markets", "halted": "exchange maintenance"}
        # a repeat changes nothing and announces nothing
        r = await op.request("halt", token=TOKEN, reason="again")
        assert r["ok"] and r["result"] == {"order_id": 0, "seq": 0}, r
        # a subscriber arriving while halted: the snapshot, then the halt
        late = await Client.open(srv.url)
        assert (await late.request("subscribe", channels=["markets"]))["ok"]
        halt = await late.wait_for(lambda f: f["type"] == "halt")
        snap = next(f for f in late.all if f.get("type") == "markets")
        assert late.all.index(snap) < late.all.index(halt) and halt["halted"] == "exchange maintenance"
        assert (await op.request("halt", token=TOKEN, reason=""))["ok"]
        resumed = await watcher.wait_for(lambda f: f["type"] == "halt" and f["halted"] is None)
        assert [f["halted"] for f in watcher.all if f.get("type") == "halt"] == ["exchange maintenance", None]
        assert resumed["channel"] == "markets"
        for c in (op, watcher, late):
            await c.close()
    finally:
        await srv.close()


async def test_halt_with_cancel_orders_over_the_cli(tmp_path: Path) -> None:
    """``crossbook halt --reason ... --cancel-orders``: halted, every resting order cancelled with
    reason HALT on its owner's ``orders`` channel; ``--cancel-orders`` with ``--resume`` is refused
    before anything is sent."""
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        mm = await logged_in(srv, 0, ["orders"])
        r = await mm.request("place", **signed_order(USERS[0], True, ETH_PX - 10 * TICK, 10 * LOT))
        assert r["ok"], r
        live = r["result"]["order_id"]
        code, out = await _cli("--reason", "oracle incident", "--cancel-orders", "--matcher-url", srv.url,
                               token=TOKEN)
        assert (code, out.strip()) == (0, "trading halted: oracle incident")
        assert not srv.engine.orders and srv.engine.halt_reason == "oracle incident"
        up = await mm.wait_for(lambda f: f["type"] == "order" and f["order_id"] == live
                               and f["status"] == "CANCELLED")
        assert up["reason"] == "HALT"
        code, out = await _cli("--resume", "--cancel-orders", "--matcher-url", srv.url, token=TOKEN)
        assert code == 1 and "--cancel-orders goes with --reason" in out
        assert srv.engine.halt_reason == "oracle incident"
        await mm.close()
    finally:
        await srv.close()


async def test_halt_with_cancels_on_a_halted_exchange_announces_no_new_halt(tmp_path: Path) -> None:
    """Halted without cancels, then with them: what rests is cancelled, the first reason stays,
    and the markets channel carries one halt message, not two."""
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        op = await Client.open(srv.url)
        watcher = await Client.open(srv.url)
        assert (await watcher.request("subscribe", channels=["markets"]))["ok"]
        mm = await logged_in(srv, 0, ["orders"])
        r = await mm.request("place", **signed_order(USERS[0], True, ETH_PX - 10 * TICK, 10 * LOT))
        assert r["ok"], r
        assert (await op.request("halt", token=TOKEN, reason="maintenance"))["ok"]
        await watcher.wait_for(lambda f: f["type"] == "halt")
        assert srv.engine.orders  # a plain halt keeps resting orders
        r2 = await op.request("halt", token=TOKEN, reason="incident", cancel_orders=True)
        assert r2["ok"] and r2["result"]["seq"] == srv.engine.cmd_seq, r2
        assert not srv.engine.orders and srv.engine.halt_reason == "maintenance"
        up = await mm.wait_for(lambda f: f["type"] == "order" and f["order_id"] == r["result"]["order_id"]
                               and f["status"] == "CANCELLED")
        assert up["reason"] == "HALT"
        assert (await watcher.request("ping"))["ok"]  # answered after anything the halt sent
        assert [f["halted"] for f in watcher.all if f.get("type") == "halt"] == ["maintenance"]
        for c in (op, watcher, mm):
            await c.close()
    finally:
        await srv.close()
