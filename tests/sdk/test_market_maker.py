"""The example market maker (examples/market_maker.py) against a real in-process matcher: it
quotes every market around the oracle, keeps quoting after an oracle move, skews after a fill,
and the script answers --help."""
from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from crossbook.paths import REPO_ROOT
from crossbook.sdk import Client, NonceManager
from matcher.commands import SetOraclePrices
from matcher.server import MatcherServer
from tests.ws.helpers import ETH_PX, USERS

PPM = 1_000_000


def load_example(name: str) -> ModuleType:
    """Import an example script as a module."""
    path = Path(REPO_ROOT) / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def quotes(server: MatcherServer, owner: str) -> dict[int, dict[str, Any]]:
    """market -> {"bid": price, "ask": price} of the owner's live orders (engine view)."""
    out: dict[int, dict[str, Any]] = {}
    for o in server.engine.orders.values():
        if o.signed.owner.lower() != owner:
            continue
        out.setdefault(o.market, {})["bid" if o.is_buy else "ask"] = o.price
    return out


async def wait_for(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


def around(q: dict[str, Any], oracle: int, cfg: Any) -> bool:
    """Both sides present, bid < oracle < ask, within the half spread plus skew plus a tick."""
    if "bid" not in q or "ask" not in q:
        return False
    band = oracle * (cfg.half_spread_ppm + cfg.skew_ppm) // PPM + oracle // 1000
    return oracle - band <= q["bid"] < oracle < q["ask"] <= oracle + band


async def start_bot(server: MatcherServer, user: Any, mm_mod: ModuleType
                    ) -> tuple[Any, Client, "asyncio.Task[None]"]:
    """The example market maker for ``user`` (2,000 USD quotes), running for up to 30 s."""
    client = await Client.connect(server.url, nonces=NonceManager(start=1))
    await client.login(user, cancel_on_disconnect=True)
    cfg = mm_mod.MMConfig(notional=2_000 * 10**6, max_position_notional=20_000 * 10**6)
    mm = mm_mod.MarketMaker(client, cfg)
    return mm, client, asyncio.create_task(mm.run(duration_s=30))


async def test_market_maker_quotes_and_follows_price(server: MatcherServer) -> None:
    mm_mod = load_example("market_maker")
    user = USERS[2]
    owner = user.address.lower()
    mm, client, task = await start_bot(server, user, mm_mod)
    cfg = mm.cfg
    try:
        oracles = {0: ETH_PX, 1: 60_000 * 10**8, 2: 150 * 10**8}
        await wait_for(lambda: len(quotes(server, owner)) == 3)
        await wait_for(lambda: all(around(quotes(server, owner).get(m, {}), px, cfg)
                                   for m, px in oracles.items()))
        # the oracle moves 2 %: the bot re-quotes around the new price, both sides of a market
        # in one batch_modify (counted here)
        batches: list[int] = []
        batch_modify = client.batch_modify

        async def counted(changes: Any) -> Any:
            changes = list(changes)
            batches.append(len(changes))
            return await batch_modify(changes)

        client.batch_modify = counted  # type: ignore[method-assign]
        new_eth = ETH_PX * 102 // 100
        res = await server.submit(SetOraclePrices(server.next_req_id(), {1: new_eth}, {0: new_eth},
                                                  int(time.time())))
        assert res.ack.ok
        await wait_for(lambda: around(quotes(server, owner).get(0, {}), new_eth, cfg))
        assert batches and set(batches) == {2}, batches
        before = quotes(server, owner)[0]
        # a taker lifts the ask: the bot is short, so it re-quotes both sides higher (skew)
        taker = await Client.connect(server.url, nonces=NonceManager(start=1))
        await taker.login(USERS[3])
        ask = before["ask"]
        size = mm_mod.plan_quotes(mm.markets[0], cfg).ask_size
        await taker.place(0, True, ask, size, tif="IOC")
        await wait_for(lambda: mm.markets[0].position == -size)
        await wait_for(lambda: quotes(server, owner).get(0, {}).get("bid", 0) > before["bid"])
        after = quotes(server, owner)[0]
        assert after["ask"] > ask or "ask" in after
        # placed and re-quoted (modify) alike, quotes live cfg.ttl_s: the matcher keeps each
        # order's nonce until its expiry, so a bot's cost on the exchange is bounded by it
        now = int(time.time())
        exps = [o.signed.expiry for o in server.engine.orders.values() if o.signed.owner.lower() == owner]
        assert exps and all(now < e <= now + cfg.ttl_s for e in exps)
        await taker.close()
        assert not task.done()
    finally:
        mm.stop()
        await task
        await client.close()
    assert mm.requotes >= 5
    assert not quotes(server, owner)  # shut down cleanly: cancel_all


def test_examples_help() -> None:
    for name in ("market_maker", "liquidation_bot", "taker"):
        r = subprocess.run([sys.executable, str(Path(REPO_ROOT) / "examples" / f"{name}.py"), "--help"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "usage:" in r.stdout


async def test_a_refused_requote_does_not_leave_the_old_quote_behind(server: MatcherServer) -> None:
    """The oracle jumps 1/3 up while someone rests an ask between the bot's old bid and its new
    one: the bot's cancel-replace of the bid is refused POST_ONLY_WOULD_CROSS, which leaves the
    old bid resting; the bot must pull it, not forget it there (a live stack's bots kept bids
    1,000 USD above the market after `oracle set` and were sold into)."""
    mm_mod = load_example("market_maker")
    user = USERS[2]
    owner = user.address.lower()
    client = await Client.connect(server.url, nonces=NonceManager(start=1))
    await client.login(user, cancel_on_disconnect=True)
    cfg = mm_mod.MMConfig(markets=[0], notional=2_000 * 10**6, max_position_notional=20_000 * 10**6)
    mm = mm_mod.MarketMaker(client, cfg)
    task = asyncio.create_task(mm.run(duration_s=30))
    other = await Client.connect(server.url, nonces=NonceManager(start=1))
    await other.login(USERS[3])
    try:
        await wait_for(lambda: around(quotes(server, owner).get(0, {}), ETH_PX, cfg))
        old_bid = quotes(server, owner)[0]["bid"]
        new_px = ETH_PX * 4 // 3
        await other.place(0, False, ETH_PX * 7 // 6, 10**6, tif="POST_ONLY")  # rests above the old ask
        res = await server.submit(SetOraclePrices(server.next_req_id(), {1: new_px}, {0: new_px},
                                                  int(time.time())))
        assert res.ack.ok
        await wait_for(lambda: quotes(server, owner).get(0, {}).get("bid") != old_bid)
        await asyncio.sleep(0.5)  # a few more refresh rounds
        q = quotes(server, owner).get(0, {})
        assert q.get("bid") != old_bid  # pulled (its re-quote still crosses the resting ask)
        # nothing live that the bot has forgotten. Waited for: a re-quote in flight is live in
        # the engine a moment before its ack reaches the bot (a race under load), while a
        # forgotten order would stay outside client.orders for good
        await wait_for(lambda: {o.oid for o in server.engine.orders.values()
                                if o.signed.owner.lower() == owner} <= set(client.orders))
    finally:
        mm.stop()
        await task
        await other.close()
        await client.close()


async def test_market_maker_pauses_while_trading_is_halted(server: MatcherServer) -> None:
    """The markets channel's `halt` message: the bot stops re-quoting (every place would be
    refused HALTED) without crashing its callback, and quotes the new price once resumed."""
    from matcher.commands import SetHalt

    user = USERS[4]
    owner = user.address.lower()
    mm, client, task = await start_bot(server, user, load_example("market_maker"))
    cfg = mm.cfg
    try:
        await wait_for(lambda: around(quotes(server, owner).get(0, {}), ETH_PX, cfg))
        assert (await server.submit(SetHalt(server.next_req_id(), "exchange maintenance"))).ack.ok
        await wait_for(lambda: mm.halted == "exchange maintenance")
        placed = mm.quotes_placed
        new_eth = ETH_PX * 102 // 100
        assert (await server.submit(SetOraclePrices(server.next_req_id(), {1: new_eth}, {0: new_eth},
                                                    int(time.time())))).ack.ok
        await asyncio.sleep(1.5)  # the loop refreshes every second: nothing placed while halted
        assert mm.quotes_placed == placed and not task.done()
        assert (await server.submit(SetHalt(server.next_req_id(), ""))).ack.ok
        await wait_for(lambda: mm.halted is None)
        await wait_for(lambda: around(quotes(server, owner).get(0, {}), new_eth, cfg))
        assert mm.quotes_placed > placed
    finally:
        mm.stop()
        await task
        await client.close()


async def test_market_maker_pulls_quotes_while_a_market_has_no_oracle_price(server: MatcherServer) -> None:
    """Reduce-only mode: the prices channel lists ETH as unavailable; the bot cancels its ETH
    quotes (the other markets keep theirs) and quotes ETH again once the price is back."""
    user = USERS[5]
    owner = user.address.lower()
    mm, client, task = await start_bot(server, user, load_example("market_maker"))
    cfg = mm.cfg
    try:
        await wait_for(lambda: len(quotes(server, owner)) == 3)
        res = await server.submit(SetOraclePrices(server.next_req_id(), {}, {}, int(time.time()), [], [0]))
        assert res.ack.ok
        await wait_for(lambda: 0 not in quotes(server, owner))
        assert set(quotes(server, owner)) == {1, 2} and not task.done()
        placed = mm.quotes_placed
        await asyncio.sleep(1.5)  # the loop refreshes every second: nothing placed meanwhile
        assert 0 not in quotes(server, owner) and mm.quotes_placed == placed
        new_eth = ETH_PX * 99 // 100
        res = await server.submit(SetOraclePrices(server.next_req_id(), {}, {0: new_eth}, int(time.time())))
        assert res.ack.ok
        await wait_for(lambda: around(quotes(server, owner).get(0, {}), new_eth, cfg))
    finally:
        mm.stop()
        await task
        await client.close()
