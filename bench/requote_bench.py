"""Re-quote round trip: a market maker moves all of its N resting orders (cancel-replace into
freshly signed orders) and waits until every answer is back, three ways.

- ``sequential``: N ``modify`` requests, each sent after the previous answer (no batching);
- ``pipelined``: N ``modify`` requests sent at once, then their N answers awaited;
- ``batch``: one ``batch_modify`` frame of N items (docs/api.md), one answer. Its items are
  also sequenced back to back, which the other two cannot promise.

The server is the ``ws`` benchmark's (its own process, uvloop, group-commit journal, the
default sleeping loop); the client is the SDK in this process, with the replacement orders
signed before timing (``modify(order=...)``, ``ModifyRequest(order=...)``), so a round's time is
the request path, not the client's signing. Figures per N and way: ``p50_us``, ``p99_us`` of a
round, over ``ROUNDS`` rounds interleaved (round-robin over the ways, so host noise hits all
three alike).

    .venv/bin/crossbook bench requote
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import tempfile
import time
from typing import Any

from bench.ws_bench import CHAIN_ID, CONTRACT, _keys, _server_main

ROUNDS = 200
LEVELS = (2, 10)
WAYS = ("sequential", "pipelined", "batch")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


async def _drive(port: int) -> dict[str, Any]:
    from crossbook.config import PRICE, SIZE
    from crossbook.eip712 import Domain, Signer
    from crossbook.protocol_types import Order
    from crossbook.sdk import Client, ModifyRequest, NonceManager

    key = _keys()[0]
    signer = Signer(key)
    owner = signer.address.lower()
    domain = Domain(CHAIN_ID, CONTRACT)
    c = await Client.connect(f"ws://127.0.0.1:{port}", nonces=NonceManager(start=1))
    await c.login(signer)
    tick, mid = PRICE // 100, 3000 * PRICE
    nonce = [10**6]
    expiry = int(time.time()) + 3600

    def signed(level: int, shift: int) -> tuple[Order, bytes]:
        nonce[0] += 1
        o = Order(owner, 0, 0, True, False, mid - (20 + level + shift) * tick, SIZE // 100,
                  nonce[0], expiry, 1000)
        return o, signer.sign_order(domain, o)

    out: dict[str, Any] = {}
    for n in LEVELS:
        ids = {w: [(await c.place_signed(*signed(i, 40 * k))).order_id for i in range(n)]
               for k, w in enumerate(WAYS)}
        # every replacement signed before timing: rounds x ways x levels
        plans = {w: [[signed(i, 40 * k + r % 2) for i in range(n)] for r in range(ROUNDS)]
                 for k, w in enumerate(WAYS)}
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        for r in range(ROUNDS):
            for w in WAYS:
                plan = plans[w][r]
                t0 = time.perf_counter()
                if w == "sequential":
                    acks = [await c.modify(oid, order=o) for oid, o in zip(ids[w], plan)]
                elif w == "pipelined":
                    acks = await asyncio.gather(*(c.modify(oid, order=o) for oid, o in zip(ids[w], plan)))
                else:
                    res = await c.batch_modify([ModifyRequest(oid, order=o) for oid, o in zip(ids[w], plan)])
                    acks = [a for a in res if not isinstance(a, Exception)]
                    assert len(acks) == n, res
                times[w].append((time.perf_counter() - t0) * 1e6)
                ids[w] = [a.order_id for a in acks]
        out[f"levels_{n}"] = {w: {"p50_us": _pct(times[w], 0.5), "p99_us": _pct(times[w], 0.99)}
                              for w in WAYS}
        await c.cancel_all(0)
    await c.close()
    return out


def run() -> dict[str, Any]:
    """One run against a fresh server process (the ``ws`` benchmark's, sleeping loop)."""
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    proc = ctx.Process(target=_server_main, args=(port_q, stop_ev, tempfile.mkdtemp(prefix="requote-"), 0),
                       daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        try:
            import uvloop
            figures = uvloop.run(_drive(port))
        except ImportError:  # pragma: no cover
            figures = asyncio.run(_drive(port))
    finally:
        stop_ev.set()
        proc.join(timeout=30)
    return {"rounds": ROUNDS, **figures}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), sort_keys=True))
