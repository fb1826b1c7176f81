"""``crossbook funding``: the operator's funding poster as a service.

Every ``--sample-interval`` seconds it samples each market's premium: the impact bid and ask of
the matcher's public book (``book.<market>`` via the SDK client, which keeps an L2 copy with gap
detection) against the oracle adapter's price on-chain. Every ``--interval`` seconds it closes
the interval with :class:`keeper.funding.FundingCalculator` (mean premium, clamped to the
market's ``max_funding_ppm``) and posts one rate per market through the matcher's token-guarded
``funding`` op, which sequences it as a FUNDING item (docs/protocol.md section 3); the relayer
settles it like any other item and the contract clamps again.

A market without a two-sided book deep enough for the impact notional, or without a usable
oracle price, contributes no sample; a market without samples in an interval gets no item.
A zero rate is not posted (it would not move the index and would cost gas).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from crossbook.commands.common import (
    add_chain_args, add_service_args, env, load_deployment, parse_units, start_service,
)
from crossbook.protocol_types import FundingItem
from crossbook.shutdown import stop_event

log = logging.getLogger("crossbook.funding")
METRICS_PORT = 9109


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``funding``."""
    p = sub.add_parser("funding", help="sample book premiums over the oracle and post a funding "
                                       "rate per market every interval (operator)")
    add_chain_args(p)
    p.add_argument("--matcher-url", default=env("CROSSBOOK_MATCHER_URL", "ws://127.0.0.1:8765"),
                   help="matcher websocket URL [$CROSSBOOK_MATCHER_URL]")
    p.add_argument("--operator-token", default=env("CROSSBOOK_OPERATOR_TOKEN"),
                   help="the matcher's operator token (the `funding` op needs it) "
                        "[$CROSSBOOK_OPERATOR_TOKEN]")
    p.add_argument("--interval", type=float,
                   default=float(env("CROSSBOOK_FUNDING_INTERVAL", "3600") or 3600),
                   help="seconds per funding interval: one rate per market is posted at its end "
                        "[$CROSSBOOK_FUNDING_INTERVAL]")
    p.add_argument("--sample-interval", type=float,
                   default=float(env("CROSSBOOK_FUNDING_SAMPLE_INTERVAL", "5") or 5),
                   help="seconds between premium samples [$CROSSBOOK_FUNDING_SAMPLE_INTERVAL]")
    p.add_argument("--impact-notional", default=env("CROSSBOOK_FUNDING_IMPACT_NOTIONAL", "10000"),
                   help="quote amount (USD) an impact order takes from the book "
                        "[$CROSSBOOK_FUNDING_IMPACT_NOTIONAL]")
    p.add_argument("--markets", default=env("CROSSBOOK_FUNDING_MARKETS"),
                   help="comma-separated market ids (default all) [$CROSSBOOK_FUNDING_MARKETS]")
    add_service_args(p, "funding", METRICS_PORT)
    p.set_defaults(func=run)


PriceReader = Callable[[], Awaitable[Mapping[int, int]]]
Poster = Callable[[FundingItem], Awaitable[Any]]


@dataclass
class _ListSink:
    """A :class:`keeper.funding.FundingSink` that keeps the items for the async poster."""

    items: list[FundingItem] = field(default_factory=list)

    def submit(self, item: FundingItem) -> None:
        """Queue one item."""
        self.items.append(item)


class FundingService:
    """Samples premiums and closes intervals (I/O through the callables it is given, so tests
    can drive it with fakes). ``books`` maps market -> an object with ``valid`` and
    ``top(depth)`` (the SDK's :class:`crossbook.sdk.book.OrderBook`)."""

    def __init__(self, markets: list[int], max_rate_ppm: Mapping[int, int], impact_notional: int,
                 books: Mapping[int, Any], read_prices: PriceReader, post: Poster,
                 depth: int = 50) -> None:
        from keeper.funding import FundingCalculator, FundingPoster

        self.markets = markets
        self.impact_notional = impact_notional
        self.books = books
        self.read_prices = read_prices
        self.post = post
        self.depth = depth
        self.sink = _ListSink()
        self.calc = FundingCalculator(dict(max_rate_ppm))
        self.poster = FundingPoster(self.calc, self.sink)
        self.samples = 0
        self.posted = 0  # items posted (a count: the service runs for months)

    async def sample(self) -> dict[int, int]:
        """One premium sample per market that has a deep enough book and an oracle price;
        returns market -> premium (ppm)."""
        from keeper.funding import impact_price

        prices = await self.read_prices()
        out: dict[int, int] = {}
        for m in self.markets:
            book = self.books.get(m)
            p = prices.get(m)
            if book is None or not book.valid or not p:
                continue
            bids, asks = book.top(self.depth)
            ib = impact_price(bids, self.impact_notional)
            ia = impact_price(asks, self.impact_notional)
            if ib is None or ia is None:
                continue  # too thin to say where the market trades
            out[m] = self.calc.add_sample(m, ib, ia, p)
            self.samples += 1
        return out

    async def end_interval(self) -> list[FundingItem]:
        """Close the interval and post each market's non-zero rate; returns what was posted."""
        items = [it for it in self.poster.end_interval() if it.rate_ppm != 0]
        self.sink.items.clear()
        for it in items:
            res = await self.post(it)
            self.posted += 1
            log.info("funding posted: market %d rate %d ppm -> %s", it.market, it.rate_ppm, res)
        return items


async def _oracle_reader(rpc: str, oracle: str) -> PriceReader:
    """market id -> the oracle adapter's price (``tryPrice``; refused feeds are left out)."""
    from web3 import AsyncWeb3

    from crossbook.chain.artifacts import load_artifact
    from crossbook.config import DEFAULT_SPEC
    from settlement.relayer import connect

    w3 = connect(rpc)
    adapter = w3.eth.contract(address=AsyncWeb3.to_checksum_address(oracle),
                              abi=load_artifact("OracleAdapter").abi)
    feeds = {i: m.feed_id for i, m in enumerate(DEFAULT_SPEC.markets)}

    async def read() -> Mapping[int, int]:
        got = await asyncio.gather(*(adapter.functions.tryPrice(f).call() for f in feeds.values()))
        return {m: int(p) for m, (ok, p) in zip(feeds, got) if ok and int(p) > 0}

    return read


async def _main(args: argparse.Namespace) -> int:
    from crossbook.config import DEFAULT_SPEC, risk_params
    from crossbook.metrics import mark_ready
    from crossbook.sdk.client import Client

    if not args.operator_token:
        raise SystemExit("--operator-token (or $CROSSBOOK_OPERATOR_TOKEN) is required")
    if args.interval <= 0 or args.sample_interval <= 0:
        raise SystemExit("--interval and --sample-interval must be positive")
    dep, rpc = load_deployment(args)
    n = len(DEFAULT_SPEC.markets)
    markets = (sorted({int(x) for x in args.markets.split(",") if x.strip()}) if args.markets
               else list(range(n)))
    if any(not 0 <= m < n for m in markets):
        raise SystemExit(f"unknown market in {markets}; have 0..{n - 1}")
    params = risk_params()
    max_rate = {m: params.markets[m].max_funding_ppm for m in markets}
    impact = parse_units(str(args.impact_notional), 6)  # quote atoms (6 decimals)
    client = await Client.connect(args.matcher_url)
    await client.subscribe([f"book.{m}" for m in markets], callback=lambda _msg: None)
    read_prices = await _oracle_reader(rpc, dep.oracle)

    async def post(item: FundingItem) -> Any:
        return await client.request("funding", token=args.operator_token, market=item.market,
                                    rate_ppm=item.rate_ppm)

    svc = FundingService(markets, max_rate, impact, client.books, read_prices, post)
    stop = stop_event()
    log.info("funding: markets %s, interval %.1fs, samples every %.1fs, impact notional %d atoms",
             markets, args.interval, args.sample_interval, impact)
    mark_ready("funding")
    interval_end = time.monotonic() + args.interval
    while not stop.is_set():
        try:
            got = await svc.sample()
            log.debug("premium samples %s", got)
            if time.monotonic() >= interval_end:
                interval_end += args.interval
                await svc.end_interval()
        except Exception as err:  # noqa: BLE001 - a node or matcher hiccup must not end the service
            log.warning("funding step failed: %s", err)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.sample_interval)
    await client.close()
    log.info("funding stopped: %d samples, %d items posted", svc.samples, svc.posted)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook funding``."""
    from crossbook.cli import _run_async

    start_service(args)
    rc: int = _run_async(_main(args))
    return rc
