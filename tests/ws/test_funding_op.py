"""The operator `funding` op: token-guarded, sequences a FUNDING item on the relayer's stream,
validated by the engine; and the `chain` op's `funding_updated` reaches the engine."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crossbook.protocol_types import FundingItem, ItemKind
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, Client, start_server

TOKEN = "op-secret"


def funding_updated(market: int, rate: int, index: int, block: int, log_index: int) -> dict[str, Any]:
    """A `funding_updated` chain event as the watcher sends it."""
    return {"type": "funding_updated", "block_number": block, "block_hash": "0x" + "ab" * 32,
            "log_index": log_index, "tx_hash": "0x" + "cd" * 32, "market": market,
            "rate_ppm": rate, "cumulative_index": index}


async def test_funding_op_sequences_an_item(tmp_path: Path) -> None:
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        c = await Client.open(srv.url)
        r = await c.request("funding", token="wrong", market=0, rate_ppm=100)
        assert (r["ok"], r["code"]) == (False, "NOT_AUTHORISED")
        assert srv.engine.ledger.next_seq == 1
        r = await c.request("funding", token=TOKEN, market=0, rate_ppm=-120)
        assert r["ok"] and r["result"]["seq"] > 0, r
        led = srv.engine.ledger
        assert led.next_seq == 2
        e = led.unsettled[1]
        assert e.kind == int(ItemKind.FUNDING) and e.item == FundingItem(0, -120)
        assert led.proj_funding[0] == -120 * ETH_PX // 1_000_000
        # the engine validates: unknown market, rate outside int32
        r = await c.request("funding", token=TOKEN, market=7, rate_ppm=1)
        assert (r["ok"], r["code"]) == (False, "UNKNOWN_MARKET")
        r = await c.request("funding", token=TOKEN, market=0, rate_ppm=2**31)
        assert (r["ok"], r["code"]) == (False, "BAD_REQUEST")
        r = await c.request("funding", token=TOKEN, market=-1, rate_ppm=1)
        assert (r["ok"], r["code"]) == (False, "BAD_REQUEST")
        # the chain applied it at another price: the event replaces the engine's index
        r = await c.request("chain", token=TOKEN, event=funding_updated(0, -120, -3_480_000, 9, 0))
        assert r["ok"] and r["result"]["seq"] > 0, r
        r = await c.request("chain", token=TOKEN, event={
            "type": "batch_settled", "block_number": 9, "block_hash": "0x" + "ab" * 32,
            "log_index": 1, "tx_hash": "0x" + "cd" * 32, "first_seq": 1, "count": 1,
            "rejected": []})
        assert r["ok"], r
        assert led.conf_funding[0] == led.proj_funding[0] == -3_480_000
        await c.close()
    finally:
        await srv.close()


async def test_funding_op_is_disabled_without_a_token(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    r = await c.request("funding", token="", market=0, rate_ppm=1)
    assert r["code"] == "NOT_AUTHORISED"
    assert server.engine.ledger.next_seq == 1
    await c.close()
