#!/usr/bin/env python3
"""Example taker on the Crossbook SDK: one market order, from login to position.

Buys or sells ``--size`` of a market as the API's market order: an IOC limit order whose price is
a protection bound ``--slippage`` beyond the best opposite quote, so it takes what the book offers
up to that price and the rest is cancelled (``IOC_REMAINDER``), never left resting. It prints the
ack, every fill, the order's final status and the sub-account's position in that market.

    python examples/taker.py --url ws://127.0.0.1:8765 --key 0x... --market ETH-PERP --buy --size 0.01

The order is acknowledged (or rejected with a code) before any of its updates arrive, and its
updates end in exactly one terminal status (docs/api.md), so the loop below needs no timeouts
beyond a guard against a dead link.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Any

if __package__ in (None, ""):  # run as a script from a checkout: make `crossbook` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crossbook.eip712 import Signer  # noqa: E402
from crossbook.fixedpoint import ceil_div  # noqa: E402
from crossbook.sdk import Client, Rejected, Subscription, units  # noqa: E402

TERMINAL = ("FILLED", "CANCELLED")


class NoLiquidity(Exception):
    """The book has no quote on the side the order would take."""


@dataclass
class TakeResult:
    """What one market order did (protocol units)."""

    order_id: int
    limit_price: int
    status: str = ""
    reason: str | None = None
    fills: list[tuple[int, int, int]] = field(default_factory=list)  # (price, size, fee)
    position: int = 0  # the sub-account's size in the market afterwards (+ long, - short)

    @property
    def filled(self) -> int:
        """Total size filled."""
        return sum(size for _, size, _ in self.fills)


def protection_price(best: int, is_buy: bool, slippage_ppm: int, tick: int) -> int:
    """The worst price the order accepts: ``slippage_ppm`` beyond ``best``, onto the tick
    (rounded away from the book, so a zero slippage still takes the best level)."""
    if is_buy:
        return units.ceil_to(ceil_div(best * (units.PPM + slippage_ppm), units.PPM), tick)
    return max(tick, units.floor_to(best * (units.PPM - slippage_ppm) // units.PPM, tick))


async def _first(sub: Subscription, kind: str, timeout: float) -> dict[str, Any]:
    """The next message of type ``kind`` on ``sub`` (a channel's snapshot follows its subscribe)."""
    while True:
        msg = await sub.get(timeout)
        if msg.get("type") == kind:
            return msg


async def take(client: Client, symbol: str, is_buy: bool, size: str, slippage: str = "0.005",
               sub: int = 0, timeout: float = 10.0) -> TakeResult:
    """Send one market order on a logged-in ``client`` and follow it to its terminal status."""
    markets = await client.subscribe(["markets"])
    listing = await _first(markets, "markets", timeout)
    await markets.close()
    info = next((m for m in listing["markets"] if m["symbol"] == symbol), None)
    if info is None:
        raise ValueError(f"no market {symbol!r}; listed: {[m['symbol'] for m in listing['markets']]}")
    market, tick, lot = int(info["market"]), int(info["tick_size"]), int(info["lot_size"])
    qty = units.floor_to(units.size(size, "down"), lot)
    if qty <= 0:
        raise ValueError(f"size {size} is below one lot ({units.fmt(lot, units.SIZE_SCALE)})")

    # Subscribe before placing: every update of the order then reaches this subscription.
    private = await client.subscribe(["orders", "fills", "positions", f"book.{market}"])
    await _first(private, "book", timeout)  # the snapshot: client.books[market] is current
    book = client.books[market]
    best = book.best_ask() if is_buy else book.best_bid()
    if best is None:
        await private.close()
        raise NoLiquidity(f"no {'asks' if is_buy else 'bids'} on {symbol}")
    limit = protection_price(best[0], is_buy, units.ppm(slippage), tick)

    ack = await client.place(market, is_buy, limit, qty, sub=sub, tif="IOC")
    result = TakeResult(ack.order_id, limit)
    try:
        while not result.status:
            msg = await private.get(timeout)
            if msg.get("order_id") != ack.order_id:
                continue
            if msg["type"] == "fill":
                result.fills.append((msg["price"], msg["size"], msg["fee"]))
            elif msg["type"] == "order" and msg["status"] in TERMINAL:
                result.status, result.reason = msg["status"], msg["reason"]
        if result.fills:
            # a command's position update follows its order updates on the same connection
            while True:
                msg = await private.get(timeout)
                if msg.get("type") == "position" and msg["sub"] == sub:
                    result.position = next((int(p["size"]) for p in msg["positions"]
                                            if p["market"] == market), 0)
                    break
    finally:
        await private.close()
    return result


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Send one market order (IOC with a protection price).")
    p.add_argument("--url", default=os.environ.get("CROSSBOOK_MATCHER_URL", "ws://127.0.0.1:8765"),
                   help="matcher websocket URL [$CROSSBOOK_MATCHER_URL]")
    p.add_argument("--key", default=os.environ.get("CROSSBOOK_KEY"),
                   help="hex private key of the owner or an approved agent ($CROSSBOOK_KEY)")
    p.add_argument("--owner", help="the owner, when --key is an agent's")
    p.add_argument("--market", default="ETH-PERP", help="market symbol")
    side = p.add_mutually_exclusive_group(required=True)
    side.add_argument("--buy", action="store_true")
    side.add_argument("--sell", action="store_true")
    p.add_argument("--size", required=True, help="base units, e.g. 0.01 (rounded down to the lot)")
    p.add_argument("--slippage", default="0.005", help="protection bound as a fraction (0.005 = 0.5%%)")
    p.add_argument("--sub", type=int, default=0, help="sub-account")
    return p


async def _main(args: argparse.Namespace) -> int:
    client = await Client.connect(args.url)
    try:
        await client.login(Signer(args.key), args.owner)
        r = await take(client, args.market, args.buy, args.size, args.slippage, args.sub)
    except Rejected as e:  # the matcher's reason code, e.g. INSUFFICIENT_MARGIN
        print(f"rejected: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except (NoLiquidity, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    finally:
        await client.close()
    px, sz, q = units.PRICE_SCALE, units.SIZE_SCALE, units.QUOTE_SCALE
    print(f"order {r.order_id}: IOC {'buy' if args.buy else 'sell'} limit {units.fmt(r.limit_price, px)}")
    for price, size, fee in r.fills:
        print(f"  fill {units.fmt(size, sz)} @ {units.fmt(price, px)}  fee {units.fmt(fee, q)} USDC")
    print(f"{r.status}{' (' + r.reason + ')' if r.reason else ''}: filled {units.fmt(r.filled, sz)}; "
          f"position {args.market} {units.fmt(r.position, sz)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if not args.key:
        print("--key (or $CROSSBOOK_KEY) is required", file=sys.stderr)
        return 2
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
