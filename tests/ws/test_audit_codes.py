"""Audit of docs/api.md's error codes against the server: every code the server can send is
documented, and the documented codes no other test reaches are produced here by real input over
a websocket, each leaving the engine state unchanged (state_hash) and the connection usable."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from crossbook.protocol_types import Withdrawal
from matcher.commands import Code
from matcher.engine import Engine, EngineConfig
from matcher.limits import Limits
from matcher.server import MatcherServer
from tests.ws.helpers import (
    DOMAIN,
    ETH_PX,
    LOT,
    TICK,
    USERS,
    Client,
    addr,
    make_engine,
    signed_order,
    start_server,
)

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SERVER_SOURCES = ["matcher/server.py", "matcher/sessions.py", "matcher/channels.py"]


def documented_codes() -> set[str]:
    """Every `CODE` of the "Error codes" section of docs/api.md."""
    text = API_MD.read_text()
    section = text[text.index("### Error codes"):text.index("## Connection and login")]
    return set(re.findall(r"`([A-Z][A-Z_]{3,})`", section))


def test_every_code_the_server_can_send_is_documented() -> None:
    root = API_MD.parents[1]
    api_layer: set[str] = set()
    for src in SERVER_SOURCES:
        text = (root / src).read_text()
        # _err(rid, "CODE", ...), LoginError("CODE", ...), check_channel's return "CODE"
        api_layer.update(re.findall(r'_err\([^,]*,\s*"([A-Z_]+)"', text))
        api_layer.update(re.findall(r'LoginError\(\s*"([A-Z_]+)"', text))
        api_layer.update(re.findall(r'return "([A-Z_]+)"', text))
    assert {"MALFORMED_JSON", "RATE_LIMITED", "UNKNOWN_CHANNEL", "BAD_CHALLENGE"} <= api_layer
    engine = {c.name for c in Code if c is not Code.OK}
    assert not (api_layer | engine) - documented_codes(), (api_layer | engine) - documented_codes()


async def expect(c: Client, server: MatcherServer, code: str, op: str, **fields: Any) -> None:
    """``op`` is refused with ``code``, nothing changed, and the connection still answers."""
    h = server.engine.state_hash()
    r = await c.request(op, **fields)
    assert (r["ok"], r.get("code")) == (False, code), r
    assert r["message"]
    assert server.engine.state_hash() == h
    assert (await c.request("ping"))["ok"]


async def test_order_codes_no_other_test_reaches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eng = make_engine(EngineConfig(max_open_orders_per_account=2, max_unsettled_per_account=2),
                      usd=10_000)
    server = await start_server(eng, journal_dir=str(tmp_path),
                                limits=Limits(max_subscriptions=3))
    try:
        mm, tk = await Client.open(server.url), await Client.open(server.url)
        await mm.login(USERS[0])
        await tk.login(USERS[1])
        assert (await mm.request("place", client_id=5,
                                 **signed_order(USERS[0], False, ETH_PX, 5 * LOT)))["ok"]
        await expect(mm, server, "DUPLICATE_CLIENT_ID", "place", client_id=5,
                     **signed_order(USERS[0], False, ETH_PX + TICK, LOT))
        await expect(tk, server, "POST_ONLY_WOULD_CROSS", "place", tif="POST_ONLY",
                     **signed_order(USERS[1], True, ETH_PX, LOT))
        assert (await mm.request("place", **signed_order(USERS[0], False, ETH_PX + TICK,
                                                         LOT)))["ok"]
        await expect(mm, server, "TOO_MANY_OPEN_ORDERS", "place",
                     **signed_order(USERS[0], False, ETH_PX + 2 * TICK, LOT))
        # 10,000 USD cannot margin a 100-ETH position at 3,000
        await expect(tk, server, "INSUFFICIENT_MARGIN", "place",
                     **signed_order(USERS[1], True, ETH_PX - 50 * TICK, 100_000 * LOT))
        for _ in range(2):  # two unsettled fills: the per-account bound
            assert (await tk.request("place", tif="IOC",
                                     **signed_order(USERS[1], True, ETH_PX, LOT)))["ok"]
        await expect(tk, server, "SETTLEMENT_LAG", "place", tif="IOC",
                     **signed_order(USERS[1], True, ETH_PX, LOT))
        # withdrawals: more than the balance, an asset that does not exist
        for code, asset, amount in (("INSUFFICIENT_BALANCE", 0, 10**15),
                                    ("UNKNOWN_ASSET", 99, 1)):
            w = Withdrawal(addr(USERS[2]), 0, asset, amount, 7, int(time.time()) + 600)
            c = await Client.open(server.url)
            await c.login(USERS[2])
            await expect(c, server, code, "withdraw", signature="0x" + USERS[2].sign_withdrawal(
                DOMAIN, w).hex(), withdrawal={"owner": w.owner, "subaccount": 0, "asset": asset,
                                              "amount": amount, "nonce": 7, "expiry": w.expiry})
            await c.close()
        await expect(mm, server, "TOO_MANY_SUBSCRIPTIONS", "subscribe",
                     channels=["book.0", "book.1", "book.2", "trades.0"])
        for c in (mm, tk):
            await c.close()
    finally:
        await server.close()


async def test_engine_without_prices_and_operator_codes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(Engine(), journal_dir=str(tmp_path), operator_token="tok")
    try:
        c = await Client.open(server.url)
        await c.login(USERS[0])
        await expect(c, server, "ORACLE_UNAVAILABLE", "funding", token="tok", market=0,
                     rate_ppm=5)
        ev = {"type": "batch_settled", "block_number": 9, "block_hash": "0x" + "ab" * 32,
              "log_index": 2, "tx_hash": "0x" + "cd" * 32, "first_seq": 5, "count": 1,
              "rejected": []}
        r = await c.request("chain", token="tok", event=ev)  # does not continue the prefix
        assert (r["ok"], r["code"]) == (False, "STALE_SETTLEMENT"), r
        await c.close()
    finally:
        await server.close()


async def test_reduce_only_with_nothing_to_reduce_is_a_cancel_not_a_reject(
        server: MatcherServer) -> None:
    c = await Client.open(server.url)
    await c.login(USERS[3])
    await c.request("subscribe", channels=["orders"])
    r = await c.request("place", **signed_order(USERS[3], True, ETH_PX - TICK, LOT,
                                                reduce_only=True))
    assert r["ok"], r
    up = await c.wait_for(lambda f: f["type"] == "order" and f["status"] == "CANCELLED")
    assert (up["order_id"], up["reason"]) == (r["result"]["order_id"], "REDUCE_ONLY")
    assert r["result"]["order_id"] not in server.engine.orders
    await c.close()
