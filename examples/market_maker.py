#!/usr/bin/env python3
"""Example market maker on the Crossbook SDK.

Quotes one bid and one ask around the oracle price on every market:

    skew   = inventory / max_position                   (in ppm, clamped to +-1)
    bid    = oracle * (1 - half_spread - skew * skew_spread)   rounded down to the tick
    ask    = oracle * (1 + half_spread - skew * skew_spread)   rounded up to the tick

so a long book leans its quotes down (sells more eagerly) and a short book leans them up. Each
side's size is cut so a fill can never take the position beyond ``max_position``. Quotes are
refreshed (cancel-replace; both sides in one ``batch_modify`` when both are live, so they move
back to back) when the oracle moves more than ``refresh_ppm`` or the position changes. The dead-man's switch cancels the quotes if this process stalls.
A market whose oracle price the chain refuses (reduce-only mode: the ``prices`` channel lists it
as unavailable) gets no quotes: they are pulled until its price is back.

All figures are integers in protocol units (prices/sizes 1e8, fractions ppm).

    python examples/market_maker.py --url ws://127.0.0.1:8765 --key 0x...
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script from a checkout: make `crossbook` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crossbook.eip712 import Signer  # noqa: E402
from crossbook.fixedpoint import ceil_div  # noqa: E402
from crossbook.sdk import (  # noqa: E402
    Ack, Client, ConnectionLost, ModifyRequest, NotConnected, Rejected, units)

log = logging.getLogger("market_maker")
PPM = 1_000_000


@dataclass
class MMConfig:
    """Strategy parameters (protocol units)."""

    markets: list[int] | None = None  # None: every market the matcher lists
    sub: int = 0
    half_spread_ppm: int = 1_000  # 0.1 % each side of the oracle
    skew_ppm: int = 2_000  # extra shift at full inventory
    notional: int = 1_000 * 10**6  # quote atoms per quote (per side)
    max_position_notional: int = 10_000 * 10**6  # quote atoms
    refresh_ppm: int = 500  # re-quote when the oracle moved this much
    dead_man_ms: int = 5_000
    tif: str = "POST_ONLY"
    # quotes expire after this long (re-quoted when they do): the matcher remembers an order's nonce
    # until its expiry, so a bot's memory cost on the exchange is orders per second times this
    ttl_s: int = 600


@dataclass
class Market:
    """What the bot knows about one market."""

    market: int
    symbol: str
    tick: int
    lot: int
    oracle: int = 0
    quoted_at: int = 0  # oracle price of the current quotes
    position: int = 0
    quoted_position: int | None = None
    bid_id: int | None = None
    ask_id: int | None = None
    bid_wanted: bool = True  # False while the position limit leaves that side unquoted
    ask_wanted: bool = True


@dataclass
class QuotePlan:
    """The two quotes for one market (size 0 means no quote on that side)."""

    bid_price: int
    bid_size: int
    ask_price: int
    ask_size: int


def plan_quotes(m: Market, cfg: MMConfig) -> QuotePlan:
    """Prices and sizes for one market from its oracle price and position (pure function)."""
    p = m.oracle
    max_pos = max(m.lot, cfg.max_position_notional * 10**10 // p)  # size units
    skew = max(-PPM, min(PPM, m.position * PPM // max_pos))
    shift = skew * cfg.skew_ppm // PPM
    bid = units.floor_to(p * (PPM - cfg.half_spread_ppm - shift) // PPM, m.tick)
    ask = units.ceil_to(ceil_div(p * (PPM + cfg.half_spread_ppm - shift), PPM), m.tick)
    if ask <= bid:
        ask = bid + m.tick
    size = units.floor_to(max(m.lot, cfg.notional * 10**10 // p), m.lot)
    bid_size = units.floor_to(max(0, min(size, max_pos - m.position)), m.lot)
    ask_size = units.floor_to(max(0, min(size, max_pos + m.position)), m.lot)
    return QuotePlan(max(bid, m.tick), bid_size, ask, ask_size)


@dataclass
class MarketMaker:
    """The quoting loop on one logged-in :class:`Client`."""

    client: Client
    cfg: MMConfig = field(default_factory=MMConfig)
    markets: dict[int, Market] = field(default_factory=dict)
    quotes_placed: int = 0
    requotes: int = 0
    # called once, when the first quotes are on the book (`crossbook mm` reports ready then)
    on_quoting: Callable[[], None] | None = None
    # why the exchange halted trading (the markets channel's `halt` message), None while trading
    halted: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: bool = False

    def stop(self) -> None:
        """Ask :meth:`run` to cancel its quotes and return."""
        self._stopped = True
        self._wake.set()

    async def run(self, duration_s: float | None = None) -> None:
        """Subscribe, quote, and keep quoting until cancelled (or ``duration_s`` passed)."""
        c = self.client
        await c.subscribe(["markets"], callback=self._on_markets)
        await c.subscribe(["prices"], callback=self._on_prices)
        await c.subscribe(["positions"], callback=self._on_position)
        await c.subscribe(["orders"], callback=self._on_order)
        c.on_reconnect = self._on_reconnect
        await c.start_dead_man(self.cfg.dead_man_ms)
        loop = asyncio.get_running_loop()
        end = None if duration_s is None else loop.time() + duration_s
        try:
            while not self._stopped and (end is None or loop.time() < end):
                self._wake.clear()
                await self.refresh()
                if self.quotes_placed and self.on_quoting is not None:
                    self.on_quoting()
                    self.on_quoting = None
                timeout = 1.0 if end is None else max(0.0, min(1.0, end - loop.time()))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        finally:
            if c.connected:
                try:
                    await c.stop_dead_man()
                    await c.cancel_all(self.cfg.sub)
                except (Rejected, ConnectionLost, NotConnected) as exc:
                    log.warning("shutdown cancel failed: %s", exc)

    # --- events -----------------------------------------------------------------------------
    def _on_markets(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "halt":
            # no quoting while halted (every place would be refused); resting quotes stay
            self.halted = msg["halted"]
            if self.halted:
                log.warning("trading halted by the exchange: %s", self.halted)
            else:
                log.info("trading resumed")
                self._wake.set()
            return
        for row in msg["markets"]:
            mid = int(row["market"])
            if self.cfg.markets is not None and mid not in self.cfg.markets:
                continue
            m = self.markets.get(mid)
            if m is None:
                m = self.markets[mid] = Market(mid, str(row["symbol"]), int(row["tick_size"]),
                                               int(row["lot_size"]))
            if row.get("oracle_price"):
                m.oracle = int(row["oracle_price"])
        self._wake.set()

    def _on_prices(self, msg: dict[str, Any]) -> None:
        for mid, px in msg["markets"].items():
            m = self.markets.get(int(mid))
            if m is not None:
                m.oracle = int(px)
        for mid in msg.get("unavailable_markets", ()):
            m = self.markets.get(int(mid))
            if m is not None:
                # reduce-only mode (the chain's oracle refuses the price): nothing to quote
                # around, and the last price may be far off the market by now
                m.oracle = 0
                log.warning("%s has no oracle price: quotes pulled until it is back", m.symbol)
        self._wake.set()

    def _on_position(self, msg: dict[str, Any]) -> None:
        if msg.get("sub") != self.cfg.sub:
            return
        sizes = {int(p["market"]): int(p["size"]) for p in msg["positions"]}
        for m in self.markets.values():
            m.position = sizes.get(m.market, 0)
        self._wake.set()

    def _on_order(self, msg: dict[str, Any]) -> None:
        # the client drops filled/cancelled ids from ``client.orders``; staleness is judged
        # from that, so a late CANCELLED of a replaced quote cannot orphan its replacement
        if msg.get("status") in ("FILLED", "CANCELLED"):
            self._wake.set()

    def _on_reconnect(self) -> None:
        # logged in with cancel_on_disconnect: the old session's quotes are gone, start over
        for m in self.markets.values():
            for oid in (m.bid_id, m.ask_id):
                if oid is not None:
                    self.client.orders.pop(oid, None)
            m.bid_id = m.ask_id = None
            m.quoted_at = 0
        self._wake.set()

    # --- quoting ----------------------------------------------------------------------------
    def _stale(self, m: Market) -> bool:
        live = self.client.orders
        missing = ((m.bid_wanted and m.bid_id not in live) or (m.ask_wanted and m.ask_id not in live))
        if missing or m.quoted_position != m.position:
            return True
        return abs(m.oracle - m.quoted_at) * PPM > m.quoted_at * self.cfg.refresh_ppm

    async def refresh(self) -> None:
        """Re-quote every market whose quotes are missing or stale (none while halted)."""
        if self.halted:
            return
        for m in list(self.markets.values()):
            if m.oracle <= 0:
                await self._pull(m)
                continue
            if not self._stale(m):
                continue
            plan = plan_quotes(m, self.cfg)
            try:
                await self._quote_both(m, plan)
            except (ConnectionLost, NotConnected) as exc:
                log.info("connection lost while quoting: %s", exc)
                return
            m.bid_wanted, m.ask_wanted = plan.bid_size > 0, plan.ask_size > 0
            m.quoted_at, m.quoted_position = m.oracle, m.position
            self.requotes += 1
            log.info("%s oracle %s: bid %s x %s / ask %s x %s (pos %s)", m.symbol,
                     units.fmt(m.oracle, units.PRICE_SCALE), units.fmt(plan.bid_price, units.PRICE_SCALE),
                     units.fmt(plan.bid_size, units.SIZE_SCALE), units.fmt(plan.ask_price, units.PRICE_SCALE),
                     units.fmt(plan.ask_size, units.SIZE_SCALE), units.fmt(m.position, units.SIZE_SCALE))

    async def _quote_both(self, m: Market, plan: QuotePlan) -> None:
        """Re-quote both sides. With both quotes live, one ``batch_modify`` cancel-replaces
        them back to back: no trade lands between the two, and it is one round trip."""
        c = self.client
        if plan.bid_size > 0 and plan.ask_size > 0 and m.bid_id in c.orders and m.ask_id in c.orders:
            assert m.bid_id is not None and m.ask_id is not None
            expiry = int(time.time()) + self.cfg.ttl_s
            bid, ask = await c.batch_modify([
                ModifyRequest(m.bid_id, price=plan.bid_price, size=plan.bid_size, expiry=expiry),
                ModifyRequest(m.ask_id, price=plan.ask_price, size=plan.ask_size, expiry=expiry)])
            m.bid_id = await self._quoted(m, m.bid_id, True, plan.bid_price, plan.bid_size, bid)
            m.ask_id = await self._quoted(m, m.ask_id, False, plan.ask_price, plan.ask_size, ask)
            return
        m.bid_id = await self._quote(m, m.bid_id, True, plan.bid_price, plan.bid_size)
        m.ask_id = await self._quote(m, m.ask_id, False, plan.ask_price, plan.ask_size)

    async def _quote(self, m: Market, current: int | None, is_buy: bool, price: int,
                     size: int) -> int | None:
        """Quote one side (place, or cancel-replace ``current``); the live quote's id."""
        c = self.client
        if size <= 0:
            if current is not None:
                await self._cancel(current)
            return None
        expiry = int(time.time()) + self.cfg.ttl_s
        outcome: Ack | Rejected
        try:
            if current is not None and current in c.orders:
                # cancel-replace: one request, the old quote never lingers next to the new one
                outcome = await c.modify(current, price=price, size=size, expiry=expiry)
            else:
                outcome = await c.place(m.market, is_buy, price, size, sub=self.cfg.sub,
                                        tif=self.cfg.tif, expiry=expiry)
        except Rejected as exc:
            outcome = exc
        return await self._quoted(m, current, is_buy, price, size, outcome)

    async def _quoted(self, m: Market, current: int | None, is_buy: bool, price: int, size: int,
                      outcome: Ack | Rejected) -> int | None:
        """The live quote's id after a place or cancel-replace of ``current`` answered."""
        c = self.client
        if isinstance(outcome, Ack):
            self.quotes_placed += 1
            return outcome.order_id
        if outcome.code == "UNKNOWN_ORDER":  # filled or cancelled meanwhile: quote afresh
            return await self._quote(m, None, is_buy, price, size)
        log.info("%s %s quote refused: %s", m.symbol, "bid" if is_buy else "ask", outcome)
        if current is not None and current in c.orders:
            # a refused cancel-replace leaves the old quote resting at its old price: pull it
            # rather than forget it there (after a big move it is far off the market)
            await self._cancel(current)
        return None

    async def _pull(self, m: Market) -> None:
        """Cancel a market's quotes (it has no oracle price); quoted afresh once it has one."""
        live = [oid for oid in (m.bid_id, m.ask_id) if oid is not None and oid in self.client.orders]
        try:
            for oid in live:
                await self._cancel(oid)
        except (ConnectionLost, NotConnected) as exc:
            log.info("connection lost while pulling quotes: %s", exc)
            return
        m.bid_id = m.ask_id = None
        m.quoted_at = 0

    async def _cancel(self, order_id: int) -> None:
        try:
            await self.client.cancel(order_id)
        except Rejected:
            pass  # already gone


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("CROSSBOOK_MATCHER_URL", "ws://127.0.0.1:8765"),
                   help="matcher websocket URL [$CROSSBOOK_MATCHER_URL]")
    p.add_argument("--key", default=os.environ.get("CROSSBOOK_MM_KEY"),
                   help="private key (hex) that signs: the owner's or an approved agent's [$CROSSBOOK_MM_KEY]")
    p.add_argument("--owner", help="owner address when --key is an agent key")
    p.add_argument("--sub", type=int, default=0, help="sub-account (default 0)")
    p.add_argument("--markets", help="comma-separated market ids (default: all)")
    p.add_argument("--half-spread", default="0.001", help="half spread as a fraction (default 0.001)")
    p.add_argument("--skew", default="0.002", help="quote shift at full inventory, fraction (default 0.002)")
    p.add_argument("--notional", default="1000", help="USD per quote (default 1000)")
    p.add_argument("--max-position", default="10000", help="max position per market in USD (default 10000)")
    p.add_argument("--refresh", default="0.0005", help="oracle move that triggers a re-quote (default 0.0005)")
    p.add_argument("--dead-man-ms", type=int, default=5_000, help="dead-man's switch timeout (default 5000)")
    p.add_argument("--ttl", type=int, default=600, help="seconds each quote lives before it expires (default 600)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run forever)")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> MMConfig:
    """An :class:`MMConfig` from parsed options (decimal strings, never floats)."""
    return MMConfig(
        markets=[int(x) for x in args.markets.split(",")] if args.markets else None,
        sub=args.sub, half_spread_ppm=units.ppm(Decimal(args.half_spread), "down"),
        skew_ppm=units.ppm(Decimal(args.skew), "down"), notional=units.quote(args.notional, "down"),
        max_position_notional=units.quote(args.max_position, "down"),
        refresh_ppm=units.ppm(Decimal(args.refresh), "down"), dead_man_ms=args.dead_man_ms, ttl_s=args.ttl)


async def run(url: str, signer: Signer, cfg: MMConfig, owner: str | None = None,
              duration_s: float | None = None,
              on_quoting: Callable[[], None] | None = None) -> MarketMaker:
    """Connect, log in and quote (until cancelled or ``duration_s``); ``on_quoting`` is
    called once the first quotes are accepted."""
    client = await Client.connect(url)
    try:
        # cancel_on_disconnect: quotes never outlive the connection that manages them
        await client.login(signer, owner, cancel_on_disconnect=True)
        mm = MarketMaker(client, cfg, on_quoting=on_quoting)
        await mm.run(duration_s)
        return mm
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if not args.key:
        print("--key (or $CROSSBOOK_MM_KEY) is required", file=sys.stderr)
        return 2
    signer = Signer(args.key)
    try:
        asyncio.run(run(args.url, signer, config_from_args(args), args.owner, args.duration))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
