"""`crossbook bench settle`: relayer throughput, gas and settlement lag on anvil.

Anvil with 1-second blocks, a 30M block gas limit and Osaka's cap of 2^24 gas per transaction
(EIP-7825); deployment and funding run with automine, then interval mining is switched on.

The flow is the matcher benchmark's (bench/matcher_bench.py: exchange-core's mix of GTC, IOC,
cancel and move over pre-filled books, 200 accounts per book): its command list is replayed on
the real order book and every fill it produces becomes a settlement item. Every order version
the fills touch is a signed order: a placed order, and each re-priced ("moved") order, which
needs a fresh signature because its limit changed. Books, prices and sizes are mapped onto the
listed markets (tick and lot of each market, centred on its oracle price).

The fills are offered to the relayer at a steady rate (default 1,500/s, the goal) through an
in-memory source, and the figures are:
- fills_per_s: fills settled / seconds from the first offered fill to the last settled one,
- gas_per_fill: total gasUsed of the settle transactions / fills,
- lag_p50_s, lag_p99_s: per-fill delay from being offered to being in a mined batch,
- orders_per_fill: distinct signed orders the contract verified / fills.
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import matcher_bench as mb
from crossbook.chain.anvil import AnvilNode, rpc_call
from crossbook.chain.devkeys import OPERATOR, dev_key
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import DEFAULT_SPEC, USD
from crossbook.eip712 import Signer
from crossbook.protocol_types import FillItem, Order
from matcher.book import OrderBook
from matcher.orders import Fill
from settlement.relayer import Relayer, RelayerConfig, connect
from settlement.source import InMemorySource

FILLS = 30_000
RATE_PER_S = 1_500.0
FIRST_USER = 100  # dev-key index of the flow's "acct0"


@dataclass
class _Version:
    """One signable version of a book order: its owner, side, limit and the size it may fill."""

    owner: str
    market: int
    is_buy: bool
    price: int
    size: int
    signed: tuple[Order, bytes] | None = None


def _spec_price(market: int, bench_price: int) -> int:
    spec = DEFAULT_SPEC.markets[market]
    mid = DEFAULT_SPEC.feeds[spec.feed_id].initial_price
    return mid + (bench_price - mb.MID) // mb.TICK * spec.tick_size


def _spec_size(market: int, bench_size: int) -> int:
    return bench_size // mb.LOT * DEFAULT_SPEC.markets[market].lot_size


def _matched(limit: int) -> list[tuple[_Version, _Version, int, int]]:
    """Replay the matcher benchmark's flow on real books; (taker, maker, bench size, bench price)
    for the first ``limit`` fills, each side the order version that was live when it matched.
    One command list gives ~16,000 fills; longer runs replay further seeds on fresh books."""
    out: list[tuple[_Version, _Version, int, int]] = []
    seed = 0
    while len(out) < limit:
        seed += 1
        _replay_seed(seed, limit, out)
    return out


def _replay_seed(seed: int, limit: int, out: list[tuple[_Version, _Version, int, int]]) -> None:
    prefill, cmds, _ = mb._generate(seed)
    books = [OrderBook(m, mb.TICK, mb.LOT) for m in range(mb.MARKETS)]
    versions: dict[tuple[int, int], _Version] = {}  # (book, order id) -> live version
    n_markets = len(DEFAULT_SPEC.markets)
    for book_ix, kind, args in prefill + cmds:
        book = books[book_ix]
        market = book_ix % n_markets
        if kind == "place":
            order = mb._order(args)
            versions[(book_ix, order.oid)] = _Version(str(order.owner), market, order.is_buy, order.price,
                                                      order.size)
            events = book.place(order, mb.NOW)
        elif kind == "cancel":
            events = book.cancel(*args)
        else:
            oid, price, size = args
            old = versions[(book_ix, oid)]
            versions[(book_ix, oid)] = _Version(old.owner, market, old.is_buy, price, size)
            events = book.modify(oid, price, size, mb.NOW)
        for e in events:
            if isinstance(e, Fill):
                out.append((versions[(book_ix, e.taker_id)], versions[(book_ix, e.maker_id)], e.size, e.price))
                if len(out) == limit:
                    return


def matcher_flow_fills(ex: LocalExchange, limit: int) -> tuple[list[FillItem], int, list[str]]:
    """Signed fill items for the flow, the number of distinct signed orders, and the owners."""
    signers: dict[str, Signer] = {}
    signed = 0

    def sign(v: _Version) -> tuple[Order, bytes]:
        nonlocal signed
        if v.signed is None:
            signer = signers.get(v.owner)
            if signer is None:
                signer = signers[v.owner] = user_signer(FIRST_USER + int(v.owner.removeprefix("acct")))
            v.signed = ex.order(signer, v.market, v.is_buy, _spec_price(v.market, v.price),
                                _spec_size(v.market, v.size))
            signed += 1
        return v.signed

    items = []
    for taker, maker, size, price in _matched(limit):
        items.append(ex.fill(sign(taker), sign(maker), _spec_size(taker.market, size),
                             _spec_price(taker.market, price)))
    return items, signed, [s.address for s in signers.values()]


async def _run(ex: LocalExchange, fills: list[FillItem], rate: float) -> dict[str, Any]:
    w3 = connect(ex.node.url)
    src = InMemorySource(first_seq=ex.client.next_seq())
    # the relayer's defaults (settlement.batcher.BatchLimits, RelayerConfig) are this benchmark's
    # best: batches cut at 14.5M of expected gas (the batcher's worst-case model scaled by what
    # the relayer's simulations measured) so that two share a 30M block. Larger batches cost less
    # gas per fill, but a chain takes no transaction above 2^24 gas (EIP-7825, enforced on this
    # anvil) nor, in a geth-style pool, above 128 kB (~700 fills).
    cfg = RelayerConfig()
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
    with AnvilNode(gas_limit=30_000_000, tx_gas_cap=True) as node:
        ex = LocalExchange(node)
        print(f"replaying the matcher flow and signing {fills} fills", file=sys.stderr, flush=True)
        items, orders, owners = matcher_flow_fills(ex, fills)
        print(f"funding {len(owners)} accounts", file=sys.stderr, flush=True)
        ex.fund_many(owners, "USDC", 10_000_000 * USD)
        rpc_call(node.url, "evm_setIntervalMining", [1])
        figures = asyncio.run(_run(ex, items, rate))
        figures.update(accounts=len(owners), orders_per_fill=round(orders / fills, 3))
        return figures


if __name__ == "__main__":
    print(run())
