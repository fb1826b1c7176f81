"""A chain reorg deeper than the watcher's confirmation depth halts trading: events the matcher
applied may be void (a dropped deposit would margin orders whose fills then bust), so the
watcher's forwarding sends the operator `halt` op, over a real websocket to a real matcher."""
from __future__ import annotations

from pathlib import Path

from websockets.asyncio.client import connect

from settlement.events import ChainReorg
from settlement.services import MatcherLink, forward
from tests.ws.helpers import ETH_PX, LOT, TICK, USERS, signed_order, start_server
from tests.ws.test_orders import logged_in

TOKEN = "op-secret"


async def test_deep_reorg_halts_trading(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        async with connect(srv.url) as ws:
            await ws.recv()  # hello
            link = MatcherLink(ws)
            await forward(link, TOKEN, ChainReorg(common_block=812, common_hash="0x" + "ab" * 32), (0, 0))
        reason = srv.engine.halt_reason
        assert reason is not None and reason.startswith("chain reorg below block 812 ")
        assert "crossbook reconcile" in reason and len(reason) <= 200
        mm = await logged_in(srv, 0)
        r = await mm.request("place", **signed_order(USERS[0], True, ETH_PX - 10 * TICK, 10 * LOT))
        assert (r["ok"], r["code"]) == (False, "HALTED")
        await mm.close()
    finally:
        await srv.close()
