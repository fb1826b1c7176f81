"""The dashboard's data: the matcher's public channels and ``status`` op (through the SDK) and
the chain's insurance fund, liquidations and sub-account state (through the clearinghouse
client). Everything the page shows is formatted here from integers (no floats), so the
browser never does arithmetic on values beyond 2**53.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from web3 import Web3

from crossbook.chain.clearinghouse import ClearinghouseClient
from settlement.events import ChainLiquidated
from crossbook.chain.deploy import Deployment
from crossbook.config import DEFAULT_SPEC, ExchangeSpec
from crossbook.sdk import Client, ConnectionLost, NotConnected, Rejected, units
from crossbook.sdk.risk import account_report

log = logging.getLogger(__name__)

P = units.PRICE_SCALE
S = units.SIZE_SCALE
Q = units.QUOTE_SCALE


# what the markets table shows for a market without an oracle price
NO_ORACLE = "no price: reduce-only"


def _px(v: int | None) -> str:
    return units.fmt(v, P, 2) if v is not None else "-"


def _liq(pos: dict[str, Any]) -> str:
    """A position's liquidation price; both sides for a short hedged by collateral on its feed."""
    down, up = pos["liquidation_down"], pos["liquidation_up"]
    if down is not None and up is not None and down != up:
        return f"<= {_px(down)} or >= {_px(up)}"
    return _px(pos["liquidation_price"])


class DashboardFeed:
    """Keeps the latest view of the exchange; :meth:`state` is what the page renders."""

    def __init__(self, matcher_url: str, deployment: Deployment, rpc_url: str | None = None,
                 spec: ExchangeSpec = DEFAULT_SPEC, chain_poll_s: float = 2.0,
                 status_poll_s: float = 1.0) -> None:
        self.matcher_url = matcher_url
        self.deployment = deployment
        self.spec = spec
        w3 = Web3(Web3.HTTPProvider(rpc_url or deployment.rpc_url, request_kwargs={"timeout": 30}))
        self.chain = ClearinghouseClient(w3, deployment, spec)
        self.chain_poll_s = chain_poll_s
        self.status_poll_s = status_poll_s
        self.client: Client | None = None
        self.markets: dict[int, dict[str, Any]] = {}
        self.halted: str | None = None  # why the exchange halted trading, None while trading
        self.trades: deque[dict[str, Any]] = deque(maxlen=50)
        self.status: dict[str, Any] = {}
        self.insurance_fund: int | None = None
        self.liquidations: deque[ChainLiquidated] = deque(maxlen=50)
        self.errors: dict[str, str] = {}
        self._liq_from = deployment.start_block
        self._tasks: list[asyncio.Task[None]] = []
        self.version = 0  # bumped on every change: the websocket pushes only when it moved

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to the matcher and start the pollers (the matcher may come up later)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._matcher_loop()), loop.create_task(self._chain_loop())]

    async def close(self) -> None:
        """Stop everything."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001 - shutting down
                pass
        if self.client is not None:
            await self.client.close()

    async def _matcher_loop(self) -> None:
        while self.client is None:
            try:
                self.client = await Client.connect(self.matcher_url)
            except OSError as exc:
                self.errors["matcher"] = f"cannot reach the matcher: {exc}"
                await asyncio.sleep(1.0)
        c = self.client
        await c.subscribe(["markets"], callback=self._on_markets)
        await c.subscribe(["prices"], callback=self._on_prices)
        n = len(self.spec.markets)
        chans = [f"book.{m}" for m in range(n)] + [f"trades.{m}" for m in range(n)]
        await c.subscribe(chans, callback=self._on_market_data)
        while True:
            try:
                self.status = await c.status()
                self.errors.pop("matcher", None)
                self.version += 1
            except (Rejected, ConnectionLost, NotConnected, asyncio.TimeoutError) as exc:
                self.errors["matcher"] = f"status unavailable: {exc}"
            await asyncio.sleep(self.status_poll_s)

    async def _chain_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._poll_chain)
                self.errors.pop("chain", None)
            except Exception as exc:  # the RPC may be down for a while; keep showing the rest
                self.errors["chain"] = f"chain unavailable: {type(exc).__name__}: {exc}"
            self.version += 1
            await asyncio.sleep(self.chain_poll_s)

    def _poll_chain(self) -> None:
        self.insurance_fund = self.chain.insurance_fund()
        head = int(self.chain.w3.eth.block_number)
        if head >= self._liq_from:
            for ev in self.chain.liquidated_events(self._liq_from, head):
                self.liquidations.appendleft(ev)
            self._liq_from = head + 1

    # --- matcher messages -------------------------------------------------------------------
    def _on_markets(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "halt":  # trading halted (the reason) or resumed (None)
            self.halted = msg["halted"]
            self.version += 1
            return
        for row in msg["markets"]:
            self.markets.setdefault(int(row["market"]), {}).update(row)
        self.version += 1

    def _on_prices(self, msg: dict[str, Any]) -> None:
        for mid, px in msg["markets"].items():
            self.markets.setdefault(int(mid), {"market": int(mid)})["oracle_price"] = int(px)
        for mid in msg.get("unavailable_markets", ()):
            self.markets.setdefault(int(mid), {"market": int(mid)})["oracle_price"] = None
        self.version += 1

    def _on_market_data(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "trade":
            self.trades.appendleft(msg)
        self.version += 1

    # --- views ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the page shows, display-formatted."""
        books = self.client.books if self.client is not None else {}
        markets = []
        for mid in sorted(self.markets):
            row = self.markets[mid]
            book = books.get(mid)
            bids, asks = book.top(8) if book is not None and book.valid else ([], [])
            markets.append({
                "market": mid, "symbol": row.get("symbol", f"#{mid}"),
                # no oracle price: the market is in reduce-only mode (docs/api.md)
                "oracle": (_px(row["oracle_price"]) if row.get("oracle_price") is not None
                           else NO_ORACLE),
                "best_bid": _px(row.get("best_bid")),
                "best_ask": _px(row.get("best_ask")),
                "bids": [[_px(p), units.fmt(s, S)] for p, s in bids],
                "asks": [[_px(p), units.fmt(s, S)] for p, s in asks],
            })
        trades = [{"market": t["market"], "symbol": self._symbol(int(t["market"])),
                   "seq": t["seq"], "price": _px(t["price"]), "size": units.fmt(t["size"], S),
                   "side": t["taker_side"], "ts_ms": t["ts_ms"]} for t in self.trades]
        st = self.status
        lag = None
        if st:
            lag = {"lag_items": st.get("lag_items"), "lag_ms": st.get("lag_ms"),
                   "settle_p50_ms": st.get("settle_p50_ms"), "settle_p99_ms": st.get("settle_p99_ms"),
                   "matched_seq": st.get("matched_seq"), "settled_seq": st.get("settled_seq")}
        liqs = [{"owner": e.owner, "sub": e.subaccount, "market": self._symbol(e.market),
                 "size": units.fmt(e.size_delta, S), "price": _px(e.price),
                 "penalty": units.fmt(e.penalty, Q, 2), "block": e.block_number, "tx": e.tx_hash}
                for e in self.liquidations]
        return {"ts_ms": int(time.time() * 1000), "markets": markets, "trades": trades, "lag": lag,
                "insurance_fund": units.fmt(self.insurance_fund, Q, 2), "liquidations": liqs,
                "errors": dict(self.errors), "halted": self.halted}

    def _symbol(self, market: int) -> str:
        row = self.markets.get(market)
        if row and "symbol" in row:
            return str(row["symbol"])
        return self.spec.markets[market].symbol if market < len(self.spec.markets) else f"#{market}"

    def account(self, owner: str, sub: int) -> dict[str, Any]:
        """Equity, health, leverage and liquidation prices of a sub-account from chain state
        and the oracle, as ``crossbook account`` shows them (synchronous: call it in a thread).
        During an oracle outage balances and positions are still shown; what needs a refused
        price is ``"-"`` and ``unpriced`` names the feeds."""
        rep = account_report(self.chain, owner, sub)
        return {
            "owner": Web3.to_checksum_address(owner), "sub": sub,
            "unpriced": rep["unpriced"],
            "equity": units.fmt(rep["equity"], Q, 2),
            "initial_health": units.fmt(rep["initial_health"], Q, 2),
            "maintenance_health": units.fmt(rep["maintenance_health"], Q, 2),
            "leverage": units.fmt(rep["leverage_x100"], 100, 2) + "x"
            if rep["leverage_x100"] is not None else "-",
            "liquidatable": rep["liquidatable"],
            "quote": units.fmt(rep["quote"], Q, 2),
            "positions": [{"market": p["market"], "symbol": p["symbol"],
                           "size": units.fmt(p["size"], S), "oracle": _px(p["oracle_price"]),
                           "notional": units.fmt(p["notional"], Q, 2),
                           "upnl": units.fmt(p["unrealized_pnl"], Q, 2),
                           "liquidation_price": _liq(p)}
                          for p in rep["positions"]],
        }
