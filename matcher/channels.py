"""Subscriptions and fan-out of engine outputs to websocket connections.

Everything here runs on the event loop thread, synchronously after each engine command (the
engine task calls :meth:`Hub.publish`), so channel state is always exactly the engine state after
the last command: a snapshot taken by :meth:`Hub.subscribe` and the deltas that follow it can
never skip or repeat a change.

Back-pressure: every connection has a bounded outbound queue drained by its own writer task. The
engine only ever appends to it (never awaits); a connection whose queue is full is a slow
consumer and is disconnected (close 1008, "slow consumer"), so one stuck client can neither stall
the engine nor make the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Iterable

from websockets.protocol import State

from crossbook import gc_policy
from crossbook.margin import compute_health
from crossbook.protocol_types import TransferItem, WithdrawItem
from matcher.commands import (
    AgentSet,
    Bust,
    ChainDeposit,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    Command,
    FillReport,
    ItemRejected,
    Liquidation,
    OrderStatus,
    OrderUpdate,
    RequestTransfer,
    RequestWithdrawal,
    Result,
    Sequenced,
    SetHalt,
    SetOraclePrices,
)
from matcher.engine import Engine
from matcher.fill_history import NOT_A_FILL, FillHistory
from matcher.fill_log import FillFrame, FillLog
from matcher.orders import CancelReason
from matcher.sessions import Session
from matcher.ws_messages import (
    BookMsg,
    BustMsg,
    FillMsg,
    HealthMsg,
    LiquidatedMsg,
    MarketInfo,
    HaltMsg,
    MarketsMsg,
    OrderMsg,
    PositionEntry,
    PositionMsg,
    PricesMsg,
    TradeMsg,
    encoder,
)

log = logging.getLogger(__name__)
_OPEN = State.OPEN
# header of a final text frame with a 7-bit payload length, by length (RFC 6455 section 5.2)
_HEAD7 = tuple(bytes((0x81, n)) for n in range(126))

PRIVATE = ("orders", "fills", "positions", "health")
# outputs that put a frame on an owner's `fills` channel (recorded even with no subscriber)
_FILLS_CHANNEL = frozenset({FillReport, Bust, Liquidation})
_STATUS = {int(s): s.name for s in OrderStatus}
_REASON = {int(r): r.name for r in CancelReason}
Acct = tuple[str, int]


class Conn:
    """One websocket connection's outbound side: a bounded frame queue and its writer task."""

    __slots__ = ("ws", "id", "session", "subs", "queue", "limit", "closed", "_wake",
                 "_waiting", "bucket", "strikes", "strike_window", "close_reason", "closing", "writer_task", "__weakref__")

    def __init__(self, ws: Any, conn_id: int, limit: int, session: Session) -> None:
        self.ws = ws
        self.id = conn_id
        self.session = session
        self.subs: set[str] = set()
        self.queue: deque[bytes] = deque()
        self.limit = limit
        self.closed = False
        self._wake = asyncio.Event()
        self._waiting = False
        self.bucket: Any = None
        self.strikes = 0  # rate-limited requests in the current window (flood detection)
        self.strike_window = 0.0
        self.close_reason: str | None = None
        self.closing: asyncio.Task[None] | None = None
        self.writer_task: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> bool:
        """Queue one encoded frame; disconnects the connection when its queue is full.
        Never blocks (the engine calls this)."""
        if self.closed:
            return False
        if self._waiting:
            # Fast path: the writer is idle (queue empty) and the socket is not applying
            # back-pressure, so write the frame now instead of waking the writer task - this
            # saves an event-loop round trip on every ack. Frames are always whole messages, so
            # this cannot interleave inside another send.
            ws = self.ws
            try:
                p = ws.protocol
                if p.state is _OPEN and not ws.paused:
                    if not (p.writes or p.expect_continuation_frame or p.extensions):
                        # the final, unmasked text frame websockets' send_text would serialize,
                        # built here: nothing is pending before it and no extension applies
                        n = len(frame)
                        ws.transport.write(
                            (_HEAD7[n] if n < 126 else b"\x81\x7e" + n.to_bytes(2, "big")
                             if n < 65536 else b"\x81\x7f" + n.to_bytes(8, "big")) + frame)
                    else:
                        p.send_text(frame)
                        ws.send_data()
                    return True
            except Exception:  # fall back to the writer task, which reports errors properly
                pass
        if len(self.queue) >= self.limit:
            self.kill(1008, "slow consumer")
            return False
        self.queue.append(frame)
        if self._waiting:
            self._waiting = False
            self._wake.set()
        return True

    async def writer(self) -> None:
        """Drain the queue into the socket until the connection closes."""
        q = self.queue
        send = self.ws.send
        try:
            while True:
                while q:
                    await send(q.popleft(), text=True)
                if self.closed:
                    return
                self._wake.clear()
                self._waiting = True
                await self._wake.wait()
        except Exception:  # the peer went away: the reader side notices and cleans up
            self.closed = True

    def kill(self, code: int, reason: str) -> None:
        """Close the connection soon (never awaited by the caller)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.queue.clear()
        self._wake.set()
        # the connection handler awaits this before returning, else websockets would close
        # the connection itself with 1000 and the client would not learn why
        self.closing = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            # a slow consumer's socket buffer is full and a flooder's inbound queue is (so the
            # peer's close frame is never read): the handshake may never finish, so cap it
            await asyncio.wait_for(self.ws.close(code, reason), 0.2)
        except Exception:
            pass
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()


class _BookFeed:
    """Top-``depth`` L2 view of one market as last published, and its channel sequence."""

    __slots__ = ("market", "depth", "seq", "bids", "asks", "fresh")

    def __init__(self, market: int, depth: int) -> None:
        self.market = market
        self.depth = depth
        self.seq = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.fresh = False  # bids/asks equal the book (only maintained while subscribed)


def _diff(old: dict[int, int], new: dict[int, int]) -> list[tuple[int, int]]:
    ch = [(p, s) for p, s in new.items() if old.get(p) != s]
    ch.extend((p, 0) for p in old if p not in new)
    return ch


class Hub:
    """Channel registry and fan-out."""

    def __init__(self, engine: Engine, symbols: dict[int, str], book_depth: int = 50,
                 fill_history: int = 5_000, fill_history_total: int = 1_000_000) -> None:
        self.engine = engine
        self.fill_history = FillHistory(engine.ledger.next_seq, fill_history, fill_history_total)
        # owner -> seq of the newest fill its `fills` channel carried: the `fills_after` that
        # resumes from a subscription made now (a client that has seen no fill has no seq)
        self.last_fill: dict[str, int] = {}
        # the on-disk record (restore_fills) and the frames of the command being published
        self.fill_log: FillLog | None = None
        self._fill_out: list[FillFrame] = []
        # frames held back while the fill log is written: (channel, owner or None, frame)
        self._held: list[tuple[str, str | None, bytes]] | None = None
        self.symbols = symbols
        self.public: dict[str, set[Conn]] = {}
        self.private: dict[str, dict[str, set[Conn]]] = {k: {} for k in PRIVATE}
        self.books = {m: _BookFeed(m, book_depth) for m in engine.books}
        self._bbo: dict[int, tuple[int | None, int | None, int | None]] = {}
        # the halt reason the markets channel last announced (a halt is announced when it changes)
        self._halt_said = engine.halt_reason
        self.valid_public = {"markets", "prices"}
        for m in engine.books:
            self.valid_public.add(f"book.{m}")
            self.valid_public.add(f"trades.{m}")

    # ---------------------------------------------------------------- subscriptions

    def check_channel(self, name: str, session: Session) -> str | None:
        """An error code for subscribing to ``name``, or None when allowed."""
        if name in self.valid_public:
            return None
        if name in self.private:
            return None if session.logged_in else "NOT_LOGGED_IN"
        return "UNKNOWN_CHANNEL"

    def subscribe(self, conn: Conn, name: str) -> None:
        """Register ``conn`` (after :meth:`check_channel`) and send the channel's snapshot."""
        if name in conn.subs:
            return
        conn.subs.add(name)
        if name in self.private:
            owner = conn.session.owner
            assert owner is not None
            self.private[name].setdefault(owner, set()).add(conn)
            self._private_snapshot(conn, name, owner)
            return
        self.public.setdefault(name, set()).add(conn)
        if name.startswith("book."):
            feed = self.books[int(name[5:])]
            self._refresh(feed)
            conn.send(encoder.encode(BookMsg(name, feed.market, "snapshot", feed.seq, feed.seq,
                                             sorted(feed.bids.items(), reverse=True),
                                             sorted(feed.asks.items()))))
        elif name == "markets":
            conn.send(encoder.encode(MarketsMsg(name, [self._market_info(m)
                                                       for m in sorted(self.books)])))
            if self.engine.halt_reason is not None:
                conn.send(encoder.encode(HaltMsg(name, self.engine.halt_reason)))
        elif name == "prices":
            r = self.engine.risk
            conn.send(encoder.encode(PricesMsg(
                name, dict(r.asset_prices), dict(r.market_prices),
                sorted(a for a in r.params.collaterals if a not in r.asset_prices),
                sorted(m for m in r.params.markets if m not in r.market_prices))))

    def unsubscribe(self, conn: Conn, name: str) -> None:
        """Drop one subscription (no error when absent)."""
        if name not in conn.subs:
            return
        conn.subs.discard(name)
        if name in self.private:
            owner = conn.session.owner
            group = self.private[name].get(owner or "")
            if group is not None:
                group.discard(conn)
                if not group:
                    del self.private[name][owner or ""]
            return
        group = self.public.get(name)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.public[name]
                if name.startswith("book."):
                    self.books[int(name[5:])].fresh = False

    def drop(self, conn: Conn) -> None:
        """Forget a closed connection."""
        for name in list(conn.subs):
            self.unsubscribe(conn, name)

    # ---------------------------------------------------------------- snapshots

    def _refresh(self, feed: _BookFeed) -> None:
        if feed.fresh:
            return
        bids, asks = self.engine.books[feed.market].depth(feed.depth)
        feed.bids, feed.asks = dict(bids), dict(asks)
        feed.seq += 1  # a new baseline: any old delta stream is over
        feed.fresh = True

    def _market_info(self, m: int) -> MarketInfo:
        b = self.engine.books[m]
        mc = self.engine.params.markets[m]
        return MarketInfo(m, self.symbols.get(m, str(m)), mc.tick_size, mc.lot_size,
                          b.best_bid(), b.best_ask(), self.engine.risk.market_prices.get(m))

    def _owner_subs(self, owner: str) -> list[int]:
        return sorted(sub for (o, sub) in self.engine.ledger.projected if o == owner)

    def _private_snapshot(self, conn: Conn, name: str, owner: str) -> None:
        if name == "orders":
            for rec in sorted(self.engine.orders.values(), key=lambda r: r.oid):
                if rec.acct[0] == owner:
                    st = OrderStatus.OPEN if rec.filled == 0 else OrderStatus.PARTIALLY_FILLED
                    conn.send(encoder.encode(OrderMsg("orders", rec.oid, rec.acct[1], rec.market,
                                                      rec.cid, st.name, rec.price, rec.filled,
                                                      rec.remaining, None)))
        elif name == "positions":
            for sub in self._owner_subs(owner):
                conn.send(self._position_frame((owner, sub)))
        elif name == "health":
            for sub in self._owner_subs(owner):
                conn.send(self._health_frame((owner, sub)))

    def _position_frame(self, acct: Acct) -> bytes:
        st = self.engine.ledger.account(acct)
        pos = [PositionEntry(m, p.size, p.open_notional, p.funding_snapshot)
               for m, p in sorted(st.positions.items()) if p.size]
        return encoder.encode(PositionMsg("positions", acct[1], st.quote,
                                          {a: v for a, v in st.collateral.items() if v}, pos))

    def _health_frame(self, acct: Acct) -> bytes:
        eng = self.engine
        try:
            h = compute_health(eng.ledger.account(acct), eng.params, eng.risk.asset_prices,
                               eng.risk.market_prices, eng.ledger.proj_funding)
        except KeyError:
            return encoder.encode(HealthMsg("health", acct[1], None, None, None, None))
        return encoder.encode(HealthMsg("health", acct[1], h.equity, h.initial_health,
                                        h.maintenance_health, h.maintenance_health < 0))

    # ---------------------------------------------------------------- fan-out

    def _to_owner(self, channel: str, owner: str, frame: bytes) -> None:
        if self._held is not None:
            self._held.append((channel, owner, frame))
            return
        group = self.private[channel].get(owner)
        if group:
            for c in tuple(group):
                c.send(frame)

    def _remember(self, owner: str, seq: int, frame: bytes) -> None:
        self.fill_history.record(owner, seq, frame)
        if seq != NOT_A_FILL:
            self.last_fill[owner] = seq

    def _fills(self, owner: str, seq: int, frame: bytes) -> None:
        """A ``fills`` frame: recorded for a later replay (subscribe's ``fills_after``) even when
        nobody listens, and on disk with the command's other frames, then sent to the owner's
        subscribed connections."""
        self._remember(owner, seq, frame)
        if self.fill_log is not None:
            self._fill_out.append((owner, seq, frame))
        self._to_owner("fills", owner, frame)

    def _release(self) -> None:
        """Send the frames held while the fill log was written, in order."""
        held, self._held = self._held, None
        for channel, owner, frame in held or ():
            if owner is None:
                self._to_public(channel, frame)
            else:
                self._to_owner(channel, owner, frame)

    def restore_fills(self, fill_log: FillLog,
                      unpublished: Iterable[tuple[Command, Result]] = ()) -> None:
        """Load the fill record from ``fill_log`` (already resumed after recovery), publish the
        outputs of the commands it missed (``unpublished``, from recovery) and record every
        ``fills`` frame from now on in it too."""
        old = self.fill_history
        first = fill_log.first_seq if fill_log.first_seq is not None else self.engine.ledger.next_seq
        self.fill_history = FillHistory(first, old.per_owner, old.total)
        with gc_policy.paused():  # up to a million frames
            for rec in fill_log.take_records():
                for owner, seq, frame in rec.frames:
                    self._remember(owner, seq, frame)
        self.fill_log = fill_log
        for cmd, res in unpublished:
            self.publish(cmd, res)

    def _to_public(self, channel: str, frame: bytes) -> None:
        if self._held is not None:
            self._held.append((channel, None, frame))
            return
        group = self.public.get(channel)
        if group:
            for c in tuple(group):
                c.send(frame)

    def publish(self, cmd: Command, res: Result) -> None:
        """Fan out what one command produced (call right after the engine applied it)."""
        private = self.private
        orders_subs = private["orders"]
        fills_subs = private["fills"]
        outs = res.outputs
        fills_here = any(type(o) in _FILLS_CHANNEL for o in outs)
        if not (self.public or orders_subs or fills_subs or private["positions"]
                or private["health"]) and not fills_here:
            # nobody subscribes to anything and nothing goes to the fill record: no message
            # to build, and no book feed to keep fresh (a feed is fresh only while its channel
            # has a subscriber)
            return
        touched_markets: set[int] = set()
        touched_accts: set[Acct] = set()
        if self._fill_out or self._held is not None:  # left by a fan-out that failed half way
            self._fill_out, self._held = [], None
        if fills_here and self.fill_log is not None:
            # this command's frames are held until its fills frames are in the log, and then
            # sent in their order: a frame a client saw is on disk even if the process dies
            # right after sending it (the fills keep their place among the order updates)
            self._held = []
        ts_ms = int(time.time() * 1000)
        for o in outs:
            t = type(o)
            if t is OrderUpdate:
                assert isinstance(o, OrderUpdate)
                touched_markets.add(o.market)
                if o.owner in orders_subs:
                    self._to_owner("orders", o.owner, encoder.encode(OrderMsg(
                        "orders", o.order_id, o.sub, o.market, o.client_id, _STATUS[o.status],
                        o.price, o.filled, o.remaining, _REASON.get(o.reason))))
            elif t is FillReport:
                assert isinstance(o, FillReport)
                touched_markets.add(o.market)
                touched_accts.add((o.taker_owner, o.taker_sub))
                touched_accts.add((o.maker_owner, o.maker_sub))
                self._to_public(f"trades.{o.market}", encoder.encode(TradeMsg(
                    f"trades.{o.market}", o.market, o.seq, o.price, o.size,
                    "buy" if o.taker_is_buy else "sell", ts_ms)))
                self._fills(o.taker_owner, o.seq, encoder.encode(FillMsg(
                    "fills", o.seq, o.market, o.taker_order_id, o.taker_sub,
                    "buy" if o.taker_is_buy else "sell", "taker", o.price, o.size,
                    o.taker_fee, ts_ms)))
                self._fills(o.maker_owner, o.seq, encoder.encode(FillMsg(
                    "fills", o.seq, o.market, o.maker_order_id, o.maker_sub,
                    "sell" if o.taker_is_buy else "buy", "maker", o.price, o.size,
                    o.maker_fee, ts_ms)))
            elif t is Bust:
                assert isinstance(o, Bust)
                for acct in (o.taker, o.maker):
                    a = (acct[0], acct[1])
                    touched_accts.add(a)
                    self._fills(a[0], NOT_A_FILL, encoder.encode(BustMsg("fills", o.seq, a[1],
                                                                         o.reason)))
            elif t is Liquidation:
                assert isinstance(o, Liquidation)
                self._publish_liquidation(o, touched_accts)
            elif t is ItemRejected:
                assert isinstance(o, ItemRejected)
                if o.account is not None:
                    touched_accts.add((o.account[0], o.account[1]))
            elif t is Sequenced:
                assert isinstance(o, Sequenced)
                it = o.item
                if isinstance(it, WithdrawItem):
                    touched_accts.add((it.withdrawal.owner.lower(), it.withdrawal.subaccount))
                elif isinstance(it, TransferItem):
                    ow = it.transfer.owner.lower()
                    touched_accts.add((ow, it.transfer.from_subaccount))
                    touched_accts.add((ow, it.transfer.to_subaccount))
        if self._fill_out:
            assert self.fill_log is not None
            self.fill_log.append(res.ack.seq, self._fill_out)
            self._fill_out = []
        if self._held is not None:
            self._release()
        ct = type(cmd)
        if ct is ChainDeposit and res.ack.ok:
            assert isinstance(cmd, ChainDeposit)
            touched_accts.add((cmd.owner.lower(), cmd.sub))
        elif ((ct is ChainForcedWithdrawalExecuted or ct is ChainForcedWithdrawalRequested)
              and res.ack.ok):
            # a sequenced FORCED item (its item names only the request id) or an owner-executed
            # escape-hatch withdrawal moved this account's balances
            assert isinstance(cmd, (ChainForcedWithdrawalExecuted, ChainForcedWithdrawalRequested))
            touched_accts.add((cmd.owner.lower(), cmd.sub))
        elif ct is SetOraclePrices and res.ack.ok:
            assert isinstance(cmd, SetOraclePrices)
            self._to_public("prices", encoder.encode(PricesMsg(
                "prices", dict(cmd.assets), dict(cmd.markets), list(cmd.gone_assets),
                list(cmd.gone_markets))))
            touched_markets.update(m for m in cmd.markets if m in self.books)
            touched_markets.update(m for m in cmd.gone_markets if m in self.books)
            # every account's health moves with prices: refresh all the subscribed ones
            for owner in list(private["health"]):
                for sub in self._owner_subs(owner):
                    self._to_owner("health", owner, self._health_frame((owner, sub)))
        elif ct is RequestWithdrawal or ct is RequestTransfer:
            pass  # covered by the Sequenced output
        elif ct is SetHalt and self.engine.halt_reason != self._halt_said:
            # (a halt with cancels on a halted exchange leaves it, and says nothing new)
            self._halt_said = self.engine.halt_reason
            if "markets" in self.public:
                self._to_public("markets", encoder.encode(HaltMsg("markets", self._halt_said)))
        elif ct is AgentSet and res.ack.ok:
            assert isinstance(cmd, AgentSet)
            if not cmd.approved:
                self._revoke(cmd.owner.lower(), cmd.agent.lower())
        for m in touched_markets:
            self._publish_book(m)
        if touched_markets and "markets" in self.public:
            changed = [self._market_info(m) for m in sorted(touched_markets)]
            changed = [mi for mi in changed
                       if self._bbo.get(mi.market) != (mi.best_bid, mi.best_ask, mi.oracle_price)]
            for mi in changed:
                self._bbo[mi.market] = (mi.best_bid, mi.best_ask, mi.oracle_price)
            if changed:
                self._to_public("markets", encoder.encode(MarketsMsg("markets", changed)))
        if touched_accts:
            self._publish_accounts(touched_accts)

    def _revoke(self, owner: str, agent: str) -> None:
        """End the private subscriptions of the sessions ``agent`` logged in for ``owner``
        (its requests are refused from now on; subscribing again is too)."""
        for name in PRIVATE:
            for c in list(self.private[name].get(owner, ())):
                if c.session.signer == agent:
                    self.unsubscribe(c, name)

    def _publish_liquidation(self, o: Liquidation, touched: set[Acct]) -> None:
        """A ``liquidated`` message to the target's owner and to the liquidator's / ADL
        counterparty's owner (on ``fills``, next to busts: both are the chain overruling the
        matcher); both accounts' positions and health are refreshed after it."""
        counter_role = "counterparty" if o.kind == "deleveraged" else "liquidator"
        sides: list[tuple[Acct, str, Acct | None]] = [((o.target[0], o.target[1]), "target",
                                                       o.counterparty)]
        if o.counterparty is not None:
            sides.append(((o.counterparty[0], o.counterparty[1]), counter_role, o.target))
        for acct, role, other in sides:
            touched.add(acct)
            self._fills(acct[0], NOT_A_FILL, encoder.encode(LiquidatedMsg(
                "fills", o.kind, role, acct[1], None if other is None else other[0],
                None if other is None else other[1], o.market, o.asset,
                o.size_delta if role == "target" else -o.size_delta, o.amount, o.price,
                o.penalty, o.insurance_share, o.covered, o.unbacked,
                o.cancelled if role == "target" else [], o.block, o.log_index)))

    def _publish_book(self, m: int) -> None:
        feed = self.books.get(m)
        if feed is None:
            return
        name = f"book.{m}"
        if name not in self.public:
            feed.fresh = False
            return
        bids, asks = self.engine.books[m].depth(feed.depth)
        nb, na = dict(bids), dict(asks)
        db, da = _diff(feed.bids, nb), _diff(feed.asks, na)
        if not db and not da:
            return
        feed.bids, feed.asks = nb, na
        prev = feed.seq
        feed.seq += 1
        db.sort(reverse=True)
        da.sort()
        self._to_public(name, encoder.encode(BookMsg(name, m, "delta", prev, feed.seq, db, da)))

    def _publish_accounts(self, accts: Iterable[Acct]) -> None:
        pos_subs = self.private["positions"]
        health_subs = self.private["health"]
        for acct in sorted(accts):
            owner = acct[0]
            if owner in pos_subs:
                self._to_owner("positions", owner, self._position_frame(acct))
            if owner in health_subs:
                self._to_owner("health", owner, self._health_frame(acct))


__all__ = ["Conn", "Hub", "PRIVATE"]
