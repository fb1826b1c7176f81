"""A realistic order flow for the end-to-end tests: makers rest large two-sided quotes, takers
send many small IOC orders (pre-signed before any timing) over several websocket connections,
so every maker order gets many fills."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from crossbook.chain.local_exchange import user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.eip712 import Signer
from crossbook.protocol_types import Order
from tests.e2e.stack import Stack, login, order_msg

ETH = 0
LOT = SIZE // 1000
ASK = 3_001 * PRICE
BID = 2_999 * PRICE


@dataclass
class Flow:
    """Who trades and the pre-signed taker orders."""

    makers: list[Signer]
    takers: list[Signer]
    taker_orders: list[list[tuple[Order, bytes]]] = field(default_factory=list)
    fills: int = 0
    lag_seen: int = 0  # the largest lag_items the status op reported while the flow ran


def prepare(stack: Stack, fills: int, n_makers: int = 4, n_takers: int = 8) -> Flow:
    """Fund the accounts on-chain and pre-sign ``fills`` one-lot IOC taker orders (alternating
    sides, so positions stay small)."""
    makers = [user_signer(100 + i) for i in range(n_makers)]
    takers = [user_signer(200 + i) for i in range(n_takers)]
    stack.ex.fund_many([u.address for u in makers + takers], "USDC", 1_000_000 * USD)
    flow = Flow(makers, takers)
    expiry = int(time.time()) + 3 * 3600
    per = -(-fills // n_takers)
    left = fills
    for t in takers:
        mine = []
        for i in range(min(per, left)):
            mine.append(stack.ex.order(t, ETH, i % 2 == 0, ASK if i % 2 == 0 else BID, LOT,
                                       expiry=expiry))
        left -= len(mine)
        flow.taker_orders.append(mine)
    return flow


async def wait_ready(stack: Stack, flow: Flow, timeout: float = 30.0) -> None:
    """Until the matcher has every deposit (through the watcher) and oracle prices."""
    deadline = time.monotonic() + timeout
    n = len(flow.makers) + len(flow.takers)
    while time.monotonic() < deadline:
        st = await stack.status()
        # each deposit is one journaled command, plus one for the first oracle prices
        if st["cmd_seq"] >= n + 1 and st["chain_cursor"][0] > 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("matcher never saw the deposits")


async def quote(stack: Stack, flow: Flow, fills: int) -> None:
    """Each maker rests one bid and one ask large enough for its share of every fill."""
    expiry = int(time.time()) + 3 * 3600
    size = (-(-fills // len(flow.makers)) // 2 + 10) * LOT
    for m in flow.makers:
        c = await login(stack, m)
        for is_buy in (True, False):
            o, sig = stack.ex.order(m, ETH, is_buy, BID if is_buy else ASK, size, expiry=expiry)
            r = await c.request("place", **order_msg(o, sig, "GTC"))
            assert r["ok"], r
        await c.close()


async def take(stack: Stack, flow: Flow, duration_s: float) -> None:
    """Send every taker order, one connection per taker, spread over ``duration_s``."""

    async def one(t: Signer, orders: list[tuple[Order, bytes]]) -> int:
        c = await login(stack, t)
        gap = duration_s / max(1, len(orders))
        start = time.monotonic()
        n = 0
        for i, (o, sig) in enumerate(orders):
            r = await c.request("place", timeout=30, **order_msg(o, sig, "IOC"))
            assert r["ok"], r
            n += 1
            delay = start + (i + 1) * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await c.close()
        return n

    async def watch_lag() -> None:
        while True:
            st = await stack.status()
            flow.lag_seen = max(flow.lag_seen, int(st["lag_items"]))
            await asyncio.sleep(0.5)

    lag = asyncio.create_task(watch_lag())
    try:
        done = await asyncio.gather(*(one(t, o) for t, o in zip(flow.takers, flow.taker_orders)))
    finally:
        lag.cancel()
    flow.fills = sum(done)


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion (tests drive the async clients from sync code)."""
    return asyncio.run(coro)
