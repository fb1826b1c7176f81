"""The operator ops of the websocket API: `chain` (authenticated chain events from the
watcher), `chain_cursor` and `status` (settlement lag)."""

from __future__ import annotations

from typing import Any

from crossbook.config import USD
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, LOT, USERS, Client, addr, signed_order, start_server

TOKEN = "op-secret"


def deposit(owner: str, amount: int, block: int, log_index: int) -> dict[str, Any]:
    """A `deposit` chain event as the watcher sends it."""
    return {"type": "deposit", "block_number": block, "block_hash": "0x" + "ab" * 32,
            "log_index": log_index, "tx_hash": "0x" + "cd" * 32, "owner": owner,
            "subaccount": 0, "asset": 0, "amount": amount}


async def test_chain_op_needs_the_operator_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        c = await Client.open(srv.url)
        r = await c.request("chain", token="wrong", event=deposit(addr(USERS[0]), USD, 5, 0))
        assert (r["ok"], r["code"]) == (False, "NOT_AUTHORISED")
        before = srv.engine.confirmed_account(addr(USERS[0]), 0).quote
        r = await c.request("chain", token=TOKEN, event=deposit(addr(USERS[0]), USD, 5, 0))
        assert r["ok"] and r["result"]["seq"] > 0
        r = await c.request("chain", token=TOKEN, event=deposit(addr(USERS[0]), USD, 5, 0))
        assert r["ok"] and r["result"]["seq"] == 0  # a duplicate: acknowledged, not applied
        assert srv.engine.confirmed_account(addr(USERS[0]), 0).quote == before + USD
        cur = await c.request("chain_cursor")
        assert cur["result"]["block"] == 5 and cur["result"]["log_index"] == 0
        await c.close()
    finally:
        await srv.close()


async def test_chain_op_is_disabled_without_a_token(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    r = await c.request("chain", token="", event=deposit(addr(USERS[0]), USD, 5, 0))
    assert r["code"] == "NOT_AUTHORISED"
    await c.close()


async def test_status_reports_settlement_lag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), operator_token=TOKEN)
    try:
        maker, taker = await Client.open(srv.url), await Client.open(srv.url)
        await maker.login(USERS[0])
        await taker.login(USERS[1])
        assert (await maker.request("place", **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
        for _ in range(3):
            assert (await taker.request("place", tif="IOC",
                                        **signed_order(USERS[1], True, ETH_PX, LOT)))["ok"]
        st = (await taker.request("status"))["result"]
        assert (st["matched_seq"], st["settled_seq"], st["lag_items"]) == (3, 0, 3)
        assert st["lag_ms"] >= 0 and st["max_unsettled_per_account"] > 0
        ev = {"type": "batch_settled", "block_number": 9, "block_hash": "0x" + "ab" * 32,
              "log_index": 2, "tx_hash": "0x" + "cd" * 32, "first_seq": 1, "count": 3,
              "rejected": []}
        assert (await taker.request("chain", token=TOKEN, event=ev))["ok"]
        st = (await taker.request("status"))["result"]
        assert (st["settled_seq"], st["lag_items"], st["lag_ms"]) == (3, 0, 0)
        assert st["chain_cursor"] == [9, 2] and st["settle_p99_ms"] >= 0
        for c in (maker, taker):
            await c.close()
    finally:
        await srv.close()
