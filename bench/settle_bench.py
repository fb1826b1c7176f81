"""`crossbook bench settle`: relayer throughput, gas and settlement lag on anvil.

Anvil with 1-second blocks and a 30M block gas limit (deployment and funding run with automine,
then interval mining is switched on). Pre-signed fills are offered to the relayer at a steady
rate through an in-memory source; the figures are:
- fills_per_s: fills settled / seconds from the first offered fill to the last settled one,
- gas_per_fill: total gasUsed of the settle transactions / fills,
- lag_p50_s, lag_p99_s: per-fill delay from being offered to being in a mined batch.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from crossbook.chain.anvil import AnvilNode, rpc_call
from crossbook.chain.devkeys import OPERATOR, dev_key
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import FillItem
from settlement.batcher import BatchLimits
from settlement.relayer import Relayer, RelayerConfig, connect
from settlement.source import InMemorySource

FILLS = 1_500
RATE_PER_S = 300.0
USERS = 20


def _fills(ex: LocalExchange, n: int) -> list[FillItem]:
    users = [user_signer(i) for i in range(1, USERS + 1)]
    px = 3_000 * PRICE
    out = []
    for i in range(n):
        taker, maker = users[i % USERS], users[(i * 7 + 1) % USERS]
        buy = (i // USERS) % 2 == 0
        out.append(ex.fill(ex.order(taker, 0, buy, px, SIZE // 10), ex.order(maker, 0, not buy, px, SIZE // 10),
                           SIZE // 10, px))
    return out


async def _run(ex: LocalExchange, fills: list[FillItem], rate: float) -> dict[str, Any]:
    w3 = connect(ex.node.url)
    src = InMemorySource(first_seq=ex.client.next_seq())
    cfg = RelayerConfig(limits=BatchLimits(max_items=200, max_age_s=0.25, max_gas=14_000_000), max_in_flight=8,
                        poll_interval_s=0.05)
    relayer = Relayer(w3, ex.client.contract.address, dev_key(OPERATOR), src, cfg)
    task = asyncio.create_task(relayer.run())
    t0 = time.time()
    for i, f in enumerate(fills):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        src.append(f)
    src.close()
    await task
    elapsed = time.time() - t0
    gas = 0
    for ev in relayer.settled:
        gas += int((await w3.eth.get_transaction_receipt(ev.tx_hash))["gasUsed"])  # type: ignore[arg-type]
    lag = relayer.lag.snapshot(time.time())
    rejected = sum(len(ev.rejected) for ev in relayer.settled)
    return {"fills": len(fills), "rejected": rejected, "batches": len(relayer.settled),
            "fills_per_s": round(len(fills) / elapsed, 1), "gas_per_fill": gas // len(fills),
            "lag_p50_s": round(lag.p50_s, 3), "lag_p99_s": round(lag.p99_s, 3), "offered_rate": rate}


def run(fills: int = FILLS, rate: float = RATE_PER_S) -> dict[str, Any]:
    """Run the benchmark on a private anvil; returns the figures (see module docstring)."""
    with AnvilNode(gas_limit=30_000_000) as node:
        ex = LocalExchange(node)
        ex.fund_many([user_signer(i).address for i in range(1, USERS + 1)], "USDC", 10_000_000 * USD)
        print(f"signing {fills} fills", file=sys.stderr, flush=True)
        items = _fills(ex, fills)
        rpc_call(node.url, "evm_setIntervalMining", [1])
        return asyncio.run(_run(ex, items, rate))


if __name__ == "__main__":
    print(run())
