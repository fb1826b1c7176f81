"""Async websocket client of the matcher API (docs/api.md) for market makers.

One :class:`Client` holds one connection. It signs orders, withdrawals and transfers with the
EIP-712 domain the server announces in ``hello``, matches responses to requests by id, keeps
subscriptions alive across reconnects (re-login, resubscribe, fresh book snapshots), detects
book gaps, and refreshes the dead-man's switch.

Usage::

    client = await Client.connect("ws://127.0.0.1:8765")
    await client.login(Signer(key))
    ack = await client.place(market=0, is_buy=True, price=units.price("2999.5"),
                             size=units.size("0.1"))
    async for msg in await client.subscribe(["fills"]):
        ...

docs/sdk.md is the guide; examples/taker.py the shortest complete program.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence, Union

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from crossbook.eip712 import Domain, Signer
from crossbook.protocol_types import Order, Transfer, Withdrawal, validate
from crossbook.sdk.book import GapDetected, OrderBook
from crossbook.sdk.errors import ConnectionLost, NotConnected, Rejected
from crossbook.sdk.nonces import NonceManager
from matcher.sessions import login_digest

log = logging.getLogger(__name__)

Message = dict[str, Any]
Callback = Callable[[Message], Union[None, Awaitable[None]]]

DEFAULT_ORDER_TTL_S = 24 * 3600
DEFAULT_MAX_FEE_PPM = 1_000


@dataclass(frozen=True)
class Ack:
    """An accepted engine command: the exchange order id (0 when none) and the command's
    journal sequence number."""

    order_id: int
    seq: int
    order: Order | None = None  # the signed order, for place / cancel-replace


@dataclass(frozen=True)
class OrderRequest:
    """One order of :meth:`Client.batch_place` (protocol units)."""

    market: int
    is_buy: bool
    price: int
    size: int
    sub: int = 0
    tif: str = "GTC"
    client_id: int | None = None
    reduce_only: bool = False
    stp: str | None = None
    expiry: int | None = None
    max_fee_ppm: int | None = None


@dataclass(frozen=True)
class ModifyRequest:
    """One change of :meth:`Client.batch_modify`, with :meth:`Client.modify`'s arguments."""

    order_id: int
    size: int | None = None
    price: int | None = None
    order: tuple[Order, bytes] | None = None
    expiry: int | None = None


class Subscription:
    """Messages of some channels, as an async iterator and/or through a callback.

    Iterating yields every message of the subscribed channels (book messages included, after
    the client applied them to :attr:`Client.books`)."""

    def __init__(self, client: Client, channels: Sequence[str], callback: Callback | None,
                 maxsize: int) -> None:
        self.client = client
        self.channels = tuple(channels)
        self.callback = callback
        # the iterator's queue only fills when someone iterates: a callback-only
        # subscription must not grow memory without bound
        self._queue: asyncio.Queue[Message] | None = None
        self._maxsize = maxsize
        self.dropped = 0

    def _deliver(self, msg: Message) -> None:
        if self.callback is not None:
            res = self.callback(msg)
            if asyncio.iscoroutine(res):
                self.client._spawn(res)
        if self._queue is not None:
            try:
                self._queue.put_nowait(msg)
            except asyncio.QueueFull:
                self.dropped += 1  # a stalled consumer loses messages rather than the process

    def __aiter__(self) -> AsyncIterator[Message]:
        if self._queue is None:
            self._queue = asyncio.Queue(self._maxsize)
        return self._iter()

    async def _iter(self) -> AsyncIterator[Message]:
        assert self._queue is not None
        while True:
            yield await self._queue.get()

    async def get(self, timeout: float | None = None) -> Message:
        """The next message (waits up to ``timeout`` seconds)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self._maxsize)
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def close(self) -> None:
        """Stop receiving; channels no other subscription uses are unsubscribed."""
        await self.client._drop_subscription(self)


@dataclass
class _Login:
    signer: Signer
    owner: str
    cancel_on_disconnect: bool


@dataclass
class ClientStats:
    """Counters a bot can log or a test can assert on."""

    connects: int = 0
    reconnects: int = 0
    gaps: int = 0
    fills_replayed: int = 0  # fills-channel frames the server replayed after a reconnect
    fill_gaps: int = 0  # replays the server could not prove complete (see fills_incomplete)
    snapshots: dict[str, int] = field(default_factory=dict)


class Client:
    """An async connection to the matcher with automatic reconnect (see module docstring).

    Create with :meth:`connect`. Every request method returns its result or raises
    :class:`Rejected`; a request in flight when the connection drops raises
    :class:`ConnectionLost` (its outcome is unknown: it is not retried, since an order must
    not be placed twice).
    """

    def __init__(self, url: str, *, reconnect: bool = True, nonces: NonceManager | None = None,
                 request_timeout: float = 10.0, stale_after_s: float = 12.0,
                 max_backoff_s: float = 5.0, queue_size: int = 10_000) -> None:
        self.url = url
        self.reconnect = reconnect
        self.nonces = nonces or NonceManager()
        self.request_timeout = request_timeout
        self.stale_after_s = stale_after_s  # api.md: no frame for 2 heartbeats = dead link
        self.max_backoff_s = max_backoff_s
        self.queue_size = queue_size
        self.hello: Message = {}
        self.domain: Domain | None = None
        self.books: dict[int, OrderBook] = {}
        self.orders: dict[int, Order] = {}  # live orders this client placed, by order id
        self.stats = ClientStats()
        self.on_reconnect: Callable[[], Union[None, Awaitable[None]]] | None = None
        # test / debugging hook: return False to drop an incoming frame before it is handled
        self.frame_filter: Callable[[Message], bool] | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        # request id -> the order it places (a batch: the orders of its items, in order)
        self._placing: dict[int, Order | list[Order | None]] = {}
        # orders that ended before the response of the batch that placed them arrived
        self._ended_early: set[int] = set()
        self._subs: list[Subscription] = []
        self._channels: set[str] = set()
        self._login: _Login | None = None
        self._dead_man_ms = 0
        self._dead_man_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._last_frame = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resync: set[str] = set()  # book channels with a resubscribe in flight
        self._hello_challenge_unused = False
        # the settlement seq of the newest fill received: after a reconnect the server replays
        # every fills-channel frame sent since that it still holds (subscribe's fills_after)
        self.last_fill_seq: int | None = None
        # order ids the `orders` snapshot of a resubscription listed (None: not collecting)
        self._snapshot_orders: set[int] | None = None

    # ================================================================ lifecycle

    @classmethod
    async def connect(cls, url: str, **kw: Any) -> Client:
        """Open a client and wait for the server's ``hello``."""
        c = cls(url, **kw)
        await c.start()
        return c

    async def start(self) -> None:
        """Connect (first attempt errors propagate) and start the background reader."""
        await self._open()
        self._run_task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Close for good: no reconnect; pending requests fail with ConnectionLost."""
        self._closing = True
        for t in (self._dead_man_task, self._run_task):
            if t is not None:
                t.cancel()
        if self._ws is not None:
            await self._ws.close()
        for t in (self._dead_man_task, self._run_task, *self._tasks):
            if t is not None:
                with contextlib.suppress(BaseException):
                    await t
        self._fail_pending()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a connection is up (it may not be logged in yet after a reconnect)."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the (re)connection, re-login and resubscription are done."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def drop_connection(self) -> None:
        """Close the socket as if the network failed (tests, or to force a fresh session);
        the client reconnects when ``reconnect`` is on."""
        if self._ws is not None:
            await self._ws.close()

    async def _open(self) -> None:
        ws = await ws_connect(self.url, compression=None, max_size=None, open_timeout=10)
        raw = await asyncio.wait_for(ws.recv(), 10)
        hello = json.loads(raw)
        if hello.get("type") != "hello":
            await ws.close()
            raise ConnectionError(f"expected hello, got {hello.get('type')!r}")
        self.hello = hello
        self._hello_challenge_unused = True
        self.domain = Domain(int(hello["chain_id"]), str(hello["verifying_contract"]))
        self._ws = ws
        self._last_frame = time.monotonic()
        self.stats.connects += 1

    async def _run(self) -> None:
        """Read frames; on a drop reconnect with backoff, log in again and resubscribe."""
        first = True
        while not self._closing:
            if not first:
                try:
                    await self._open()
                except (OSError, asyncio.TimeoutError, ConnectionError, ConnectionClosed) as exc:
                    log.info("reconnect to %s failed: %s", self.url, exc)
                    await asyncio.sleep(self._backoff())
                    continue
                self.stats.reconnects += 1
            reader = asyncio.get_running_loop().create_task(self._read(self._ws))
            try:
                await self._restore(first)
            except (Rejected, ConnectionLost, asyncio.TimeoutError) as exc:
                log.warning("restoring the session failed: %s", exc)
                if self._ws is not None:
                    await self._ws.close()
            else:
                self._backoff_n = 0
                self._connected.set()
                if not first and self.on_reconnect is not None:
                    res = self.on_reconnect()
                    if asyncio.iscoroutine(res):
                        self._spawn(res)
            first = False
            await reader
            self._connected.clear()
            self._fail_pending()
            for b in self.books.values():
                b.invalidate()  # api.md: after any reconnect the book needs a fresh snapshot
            self._resync.clear()
            if not self.reconnect:
                break
            if not self._closing:
                await asyncio.sleep(self._backoff())

    _backoff_n = 0

    def _backoff(self) -> float:
        self._backoff_n += 1
        base = min(self.max_backoff_s, 0.05 * 2 ** min(self._backoff_n, 10))
        return base * (0.5 + random.random() / 2)  # jitter: many bots must not reconnect in step

    async def _restore(self, first: bool) -> None:
        if first:
            return  # login/subscribe are the caller's on the first connection
        if self._login is not None:
            await self._do_login(self._login)
        if self._channels:
            fields: dict[str, Any] = {"channels": sorted(self._channels)}
            if "fills" in self._channels and self.last_fill_seq is not None:
                fields["fills_after"] = self.last_fill_seq
            # orders placed from here on are not in the snapshot yet may be live
            before = set(self.orders) if "orders" in self._channels else set()
            if before:
                self._snapshot_orders = set()
            try:
                await self._request("subscribe", **fields)
                if self._snapshot_orders is not None:
                    await self._request("ping")  # answered after the whole orders snapshot
                    self._orders_ended(before - self._snapshot_orders)
            finally:
                self._snapshot_orders = None
        if self._dead_man_ms:
            await self._request("dead_man", timeout_ms=self._dead_man_ms)

    async def _read(self, ws: ClientConnection | None) -> None:
        if ws is None:
            return
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(ws))
        try:
            async for raw in ws:
                self._last_frame = time.monotonic()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("non-JSON frame from the server")
                    continue
                if self.frame_filter is not None and not self.frame_filter(msg):
                    continue
                try:
                    self._on_frame(msg)
                except Exception:  # a bad callback must not kill the connection
                    log.exception("handling %s failed", msg.get("type"))
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()

    async def _watchdog(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.stale_after_s / 4)
            if time.monotonic() - self._last_frame > self.stale_after_s:
                log.warning("no frame for %.0fs: reconnecting", self.stale_after_s)
                await ws.close()
                return

    def _fail_pending(self) -> None:
        self._placing.clear()
        self._ended_early.clear()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("connection lost with the request in flight"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ================================================================ frames

    def _on_frame(self, msg: Message) -> None:
        t = msg.get("type")
        if t == "response":
            result = msg.get("result")
            if isinstance(result, dict):
                if self.last_fill_seq is None and "fills_last" in result:
                    # no fill seen yet: a replay must start where this subscription did
                    self.last_fill_seq = int(result["fills_last"])
                if "fills" in result:
                    self._check_replay(result["fills"])  # before the replayed frames
            placed = self._placing.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if isinstance(placed, list):
                self._batch_placed(placed, msg)
            elif placed is not None and msg.get("ok") and isinstance(result, dict) \
                    and result.get("order_id"):
                # here, not when the caller resumes: the order's updates follow the ack in the
                # same read, and an IOC's FILLED must find it to remove it
                self.orders[int(result["order_id"])] = placed
            fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if t == "heartbeat":
            return
        if t == "book":
            self._on_book(msg)
        elif t == "fill":
            seq = int(msg["seq"])
            if self.last_fill_seq is None or seq > self.last_fill_seq:
                self.last_fill_seq = seq
        ch = msg.get("channel")
        if ch is None and t == "dead_man":
            ch = "dead_man"  # not a channel, but bots want to hear about it
        for sub in list(self._subs):
            if ch in sub.channels or (t == "dead_man" and "*" in sub.channels):
                sub._deliver(msg)
        if t == "order":
            if msg.get("status") in ("FILLED", "CANCELLED"):
                oid = int(msg["order_id"])
                if self.orders.pop(oid, None) is None and self._batch_in_flight():
                    self._ended_early.add(oid)  # perhaps a batch's: its response comes later
            elif self._snapshot_orders is not None:
                self._snapshot_orders.add(int(msg["order_id"]))

    def _batch_placed(self, placed: list[Order | None], msg: Message) -> None:
        """A ``batch_place`` or ``batch_modify`` response: the orders its accepted items placed
        join :attr:`orders` (``None``: a size-only modify placed none), except those whose end
        (an IOC's fill, ...) arrived before the response, as a batch's updates do."""
        result = msg.get("result")
        if msg.get("ok") and isinstance(result, dict):
            for o, item in zip(placed, result.get("results", ())):
                oid = int(item.get("order_id") or 0) if item.get("ok") else 0
                if o is not None and oid and oid not in self._ended_early:
                    self.orders[oid] = o
        if not self._batch_in_flight():
            self._ended_early.clear()

    def _batch_in_flight(self) -> bool:
        return any(isinstance(p, list) for p in self._placing.values())

    def _orders_ended(self, absent: set[int]) -> None:
        """After a reconnect: the orders this client placed that the new ``orders`` snapshot
        does not list ended while the link was down (their last updates went with it; their
        fills are replayed). They leave :attr:`orders`, and the ``orders`` subscriptions get
        ``{"type": "orders_ended", "channel": "orders", "order_ids": [...]}``."""
        gone = sorted(oid for oid in absent if oid in self.orders)
        if not gone:
            return
        for oid in gone:
            del self.orders[oid]
        log.info("orders that ended while the connection was down: %s", gone)
        self._on_frame({"type": "orders_ended", "channel": "orders", "order_ids": gone})

    def _on_book(self, msg: Message) -> None:
        market = int(msg["market"])
        book = self.books.setdefault(market, OrderBook(market))
        channel = str(msg["channel"])
        if msg["kind"] == "snapshot":
            self._resync.discard(channel)
            self.stats.snapshots[channel] = self.stats.snapshots.get(channel, 0) + 1
        elif channel in self._resync:
            return  # deltas of the stale subscription until the fresh snapshot
        try:
            book.apply(msg)
        except GapDetected as exc:
            log.warning("%s; resubscribing for a fresh snapshot", exc)
            self.stats.gaps += 1
            self._resync.add(channel)
            self._spawn(self._resubscribe(channel))

    async def _resubscribe(self, channel: str) -> None:
        try:
            await self._request("unsubscribe", channels=[channel])
            await self._request("subscribe", channels=[channel])
        except (Rejected, ConnectionLost, NotConnected, asyncio.TimeoutError) as exc:
            log.warning("resubscribing %s failed: %s", channel, exc)  # a reconnect redoes it

    # ================================================================ requests

    async def _request(self, op: str, signed: Order | None = None, **fields: Any) -> Any:
        """Send one request and return its ``result`` (raises Rejected / ConnectionLost)."""
        fut = await self._send(op, signed, **fields)
        return await self._result(fut)

    async def _send(self, op: str, signed: Order | list[Order | None] | None = None,
                    **fields: Any) -> asyncio.Future[Message]:
        """Send one request; ``signed``: the order it places (a batch's orders), tracked in
        :attr:`orders` from its ack on."""
        ws = self._ws
        if ws is None:
            raise NotConnected("not connected")
        rid = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if signed is not None:
            self._placing[rid] = signed
        try:
            await ws.send(json.dumps({"op": op, "id": rid, **fields}))
        except ConnectionClosed:
            self._pending.pop(rid, None)
            self._placing.pop(rid, None)
            raise ConnectionLost("connection closed before the request was sent") from None
        return fut

    async def _result(self, fut: asyncio.Future[Message]) -> Any:
        msg = await asyncio.wait_for(fut, self.request_timeout)
        if not msg.get("ok"):
            raise Rejected(str(msg.get("code")), str(msg.get("message", "")))
        return msg.get("result")

    async def request(self, op: str, **fields: Any) -> Any:
        """Any API op not wrapped below (e.g. ``status``, ``chain_cursor``); returns ``result``."""
        return await self._request(op, **fields)

    async def ping(self) -> int:
        """Round trip; returns the server's ``ts_ms``."""
        return int((await self._request("ping"))["ts_ms"])

    async def status(self) -> Message:
        """The ``status`` op: settlement lag figures (no login needed)."""
        return dict(await self._request("status"))

    # ---------------------------------------------------------------- login

    @property
    def owner(self) -> str:
        """The logged-in owner (lower-case address)."""
        if self._login is None:
            raise NotConnected("not logged in")
        return self._login.owner

    @property
    def signer(self) -> Signer:
        """The key that signs orders (the owner's, or its approved agent's)."""
        if self._login is None:
            raise NotConnected("not logged in")
        return self._login.signer

    async def login(self, signer: Signer, owner: str | None = None, *,
                    cancel_on_disconnect: bool = False) -> Message:
        """Log in as ``owner`` (default: the signer's own address) with ``signer``'s key: the
        owner's, or an agent the owner approved on-chain (``ChainAccount.set_agent``). The
        credentials are kept to log in again after a reconnect."""
        lg = _Login(signer, (owner or signer.address).lower(), cancel_on_disconnect)
        result = await self._do_login(lg)
        self._login = lg
        self._connected.set()
        return dict(result)

    async def _do_login(self, lg: _Login) -> Any:
        assert self.domain is not None
        # any login attempt consumes the challenge it names: use hello's once, then ask
        if self._hello_challenge_unused:
            challenge = str(self.hello["challenge"])
            self._hello_challenge_unused = False
        else:
            challenge = str((await self._request("challenge"))["challenge"])
        expiry = int(time.time()) + 60
        digest = login_digest(self.domain, lg.owner, lg.signer.address.lower(),
                              bytes.fromhex(challenge[2:]), expiry)
        sig = lg.signer.sign_digest(digest)
        return await self._request("login", owner=lg.owner, signer=lg.signer.address.lower(),
                                   challenge=challenge, expiry=expiry,
                                   signature="0x" + sig.hex(),
                                   cancel_on_disconnect=lg.cancel_on_disconnect)

    # ---------------------------------------------------------------- orders

    def sign_order(self, market: int, is_buy: bool, price: int, size: int, *, sub: int = 0,
                   reduce_only: bool = False, expiry: int | None = None,
                   max_fee_ppm: int | None = None, nonce: int | None = None) -> tuple[Order, bytes]:
        """Build and sign an ``Order`` for the logged-in owner (protocol units; a fresh
        sequential nonce unless given)."""
        _check_int(price=price, size=size, market=market, sub=sub)
        owner = self.owner
        assert self.domain is not None
        o = Order(owner=owner, subaccount=sub, market=market, is_buy=is_buy,
                  reduce_only=reduce_only, price=price, size=size,
                  nonce=self.nonces.next(owner) if nonce is None else nonce,
                  expiry=int(time.time()) + DEFAULT_ORDER_TTL_S if expiry is None else expiry,
                  max_fee_ppm=DEFAULT_MAX_FEE_PPM if max_fee_ppm is None else max_fee_ppm)
        validate(o)
        return o, self.signer.sign_order(self.domain, o)

    async def place_signed(self, order: Order, signature: bytes, *, tif: str = "GTC",
                           client_id: int | None = None, stp: str | None = None) -> Ack:
        """Place an already signed order."""
        fut = await self._send("place", order,
                               **_place_fields(order, signature, tif, client_id, stp))
        return self._order_ack(await self._result(fut), order)

    async def place(self, market: int, is_buy: bool, price: int, size: int, *, sub: int = 0,
                    tif: str = "GTC", client_id: int | None = None, stp: str | None = None,
                    reduce_only: bool = False, expiry: int | None = None,
                    max_fee_ppm: int | None = None) -> Ack:
        """Sign and place one order; returns its ack (``order_id``, ``seq``)."""
        o, sig = self.sign_order(market, is_buy, price, size, sub=sub, reduce_only=reduce_only,
                                 expiry=expiry, max_fee_ppm=max_fee_ppm)
        return await self.place_signed(o, sig, tif=tif, client_id=client_id, stp=stp)

    async def batch_place(self, orders: Iterable[OrderRequest]) -> list[Ack | Rejected]:
        """Sign and place many orders with ``batch_place`` frames of up to the server's
        ``max_batch`` (hello) each, all sent before any response is awaited. Each frame's orders
        are sequenced back to back; each order succeeds or fails on its own: the list holds an
        :class:`Ack` or the :class:`Rejected` error per order, in order (a frame refused whole,
        e.g. ``RATE_LIMITED``, gives its error to each of its orders). A lost connection raises."""
        signed: list[tuple[OrderRequest, Order, bytes]] = []
        for r in orders:
            o, sig = self.sign_order(r.market, r.is_buy, r.price, r.size, sub=r.sub,
                                     reduce_only=r.reduce_only, expiry=r.expiry,
                                     max_fee_ppm=r.max_fee_ppm)
            signed.append((r, o, sig))
        frames = []
        for chunk in self._chunks(signed):
            items = [_place_fields(o, sig, r.tif, r.client_id, r.stp) for r, o, sig in chunk]
            placed: list[Order | None] = [o for _, o, _ in chunk]
            frames.append((await self._send("batch_place", placed, orders=items), placed))
        out: list[Ack | Rejected] = []
        for fut, sent in frames:
            for po, item in zip(sent, await self._batch_results(fut, len(sent))):
                out.append(item if isinstance(item, Rejected) else self._order_ack(item, po))
        return out

    def _chunks(self, items: list[Any]) -> list[list[Any]]:
        """``items`` in runs of the server's ``max_batch`` (1 for a server that names none)."""
        n = int(self.hello.get("limits", {}).get("max_batch", 1)) if self.hello else 1
        n = max(1, n)
        return [items[i:i + n] for i in range(0, len(items), n)]

    async def _batch_results(self, fut: asyncio.Future[Message], n: int) -> list[Any]:
        """The per-item results of a batch response: each accepted item's result, or a
        :class:`Rejected` (the frame's own error for all ``n`` when it was refused whole)."""
        try:
            result = await self._result(fut)
        except Rejected as exc:
            return [exc] * n
        return [item if item.get("ok") else Rejected(str(item.get("code")), str(item.get("message", "")))
                for item in result["results"]]

    def _order_ack(self, result: Any, order: Order | None) -> Ack:
        return Ack(int(result["order_id"]), int(result["seq"]), order)

    async def cancel(self, order_id: int | None = None, *, sub: int | None = None,
                     market: int | None = None, client_id: int | None = None) -> Ack:
        """Cancel by exchange ``order_id``, or by ``(sub, market, client_id)``."""
        fields: dict[str, Any] = {}
        if order_id is not None:
            fields["order_id"] = order_id
        else:
            if sub is None or market is None or client_id is None:
                raise ValueError("give order_id, or sub + market + client_id")
            fields.update(sub=sub, market=market, client_id=client_id)
        ack = self._order_ack(await self._request("cancel", **fields), None)
        if order_id is not None:
            self.orders.pop(order_id, None)
        return ack

    async def batch_cancel(self, order_ids: Iterable[int]) -> list[Ack | Rejected]:
        """Cancel many orders with ``batch_cancel`` frames (as :meth:`batch_place`); an
        :class:`Ack` or :class:`Rejected` per order id, in order."""
        frames = [(await self._send("batch_cancel", cancels=[{"order_id": oid} for oid in chunk]), chunk)
                  for chunk in self._chunks(list(order_ids))]
        out: list[Ack | Rejected] = []
        for fut, chunk in frames:
            for oid, item in zip(chunk, await self._batch_results(fut, len(chunk))):
                if isinstance(item, Rejected):
                    out.append(item)
                else:
                    out.append(self._order_ack(item, None))
                    self.orders.pop(oid, None)
        return out

    async def cancel_all(self, sub: int = 0, market: int | None = None, *,
                         all_subs: bool = False) -> Ack:
        """Cancel every live order of a sub-account, or with ``all_subs`` of every
        sub-account of the logged-in owner (in one market, or all)."""
        fields: dict[str, Any] = {"all_subs": True} if all_subs else {"sub": sub}
        if market is not None:
            fields["market"] = market
        ack = self._order_ack(await self._request("cancel_all", **fields), None)
        for oid, o in list(self.orders.items()):
            if (all_subs or o.subaccount == sub) and (market is None or o.market == market):
                del self.orders[oid]
        return ack

    async def modify(self, order_id: int, *, size: int | None = None,
                     price: int | None = None, order: tuple[Order, bytes] | None = None,
                     expiry: int | None = None) -> Ack:
        """Change a live order.

        - ``size`` alone: decrease the open size in place to ``size``, keeping queue priority.
        - ``price`` (and optionally ``size``): cancel-replace into a freshly signed order with
          the same sub-account, market and side as the original (which this client must have
          placed) and a new nonce; returns the replacement's order id. Without ``size`` the
          replacement is as large as the original signed order: what filled or was cut since
          is not subtracted, so pass the open size you want. ``expiry`` (unix seconds) as in
          :meth:`place` (default: ``DEFAULT_ORDER_TTL_S`` from now).
        - ``order``: cancel-replace into the given signed order.
        """
        fields, o = self._modify_fields(order_id, size, price, order, expiry)
        res = await self._request("modify", o, order_id=order_id, **fields)
        if o is not None:
            self.orders.pop(order_id, None)
        return self._order_ack(res, o)

    async def batch_modify(self, changes: Iterable[ModifyRequest]) -> list[Ack | Rejected]:
        """Many :meth:`modify` changes (a whole re-quote) in ``batch_modify`` frames of up to
        ``max_batch``, each frame's changes sequenced back to back; an :class:`Ack` or
        :class:`Rejected` per change, in order (as :meth:`batch_place`)."""
        prepared = [(c.order_id, *self._modify_fields(c.order_id, c.size, c.price, c.order, c.expiry))
                    for c in changes]
        frames = []
        for chunk in self._chunks(prepared):
            replacing: list[Order | None] = [o for _, _, o in chunk]
            items = [{"order_id": oid, **fields} for oid, fields, _ in chunk]
            frames.append((await self._send("batch_modify", replacing, modifies=items), chunk))
        out: list[Ack | Rejected] = []
        for fut, chunk in frames:
            for (oid, _, o), item in zip(chunk, await self._batch_results(fut, len(chunk))):
                if isinstance(item, Rejected):
                    out.append(item)
                    continue
                if o is not None:
                    self.orders.pop(oid, None)
                out.append(self._order_ack(item, o))
        return out

    def _modify_fields(self, order_id: int, size: int | None, price: int | None,
                       order: tuple[Order, bytes] | None,
                       expiry: int | None) -> tuple[dict[str, Any], Order | None]:
        """A modify's request fields, and the replacement order it signs (None: size only)."""
        if order is None and price is None:
            if size is None:
                raise ValueError("give size, price or order")
            return {"size": size}, None
        if order is None:
            old = self.orders.get(order_id)
            if old is None:
                raise ValueError(f"order {order_id} was not placed by this client; pass order=")
            assert price is not None
            order = self.sign_order(old.market, old.is_buy, price,
                                    old.size if size is None else size, sub=old.subaccount,
                                    reduce_only=old.reduce_only, max_fee_ppm=old.max_fee_ppm,
                                    expiry=expiry)
        o, sig = order
        return {"order": _order_json(o), "signature": "0x" + sig.hex()}, o

    # ---------------------------------------------------------------- funds

    async def withdraw(self, asset: int, amount: int, *, sub: int = 0,
                       expiry: int | None = None, owner_signer: Signer | None = None) -> Ack:
        """Signed withdrawal of ``amount`` atoms of ``asset`` to the owner's wallet (settled
        on-chain by the relayer). Must be signed by the owner itself: pass ``owner_signer``
        when the session is logged in with an agent key."""
        s = self._owner_signer(owner_signer)
        assert self.domain is not None
        w = Withdrawal(owner=self.owner, subaccount=sub, asset=asset, amount=amount,
                       nonce=self.nonces.next(self.owner),
                       expiry=int(time.time()) + 600 if expiry is None else expiry)
        validate(w)
        sig = s.sign_withdrawal(self.domain, w)
        body = {"owner": w.owner, "subaccount": w.subaccount, "asset": w.asset,
                "amount": w.amount, "nonce": w.nonce, "expiry": w.expiry}
        return self._order_ack(await self._request("withdraw", withdrawal=body,
                                                   signature="0x" + sig.hex()), None)

    async def transfer(self, from_sub: int, to_sub: int, asset: int, amount: int, *,
                       expiry: int | None = None, owner_signer: Signer | None = None) -> Ack:
        """Signed transfer of collateral between two of the owner's sub-accounts."""
        s = self._owner_signer(owner_signer)
        assert self.domain is not None
        t = Transfer(owner=self.owner, from_subaccount=from_sub, to_subaccount=to_sub,
                     asset=asset, amount=amount, nonce=self.nonces.next(self.owner),
                     expiry=int(time.time()) + 600 if expiry is None else expiry)
        validate(t)
        sig = s.sign_transfer(self.domain, t)
        body = {"owner": t.owner, "from_subaccount": from_sub, "to_subaccount": to_sub,
                "asset": asset, "amount": amount, "nonce": t.nonce, "expiry": t.expiry}
        return self._order_ack(await self._request("transfer", transfer=body,
                                                   signature="0x" + sig.hex()), None)

    def _owner_signer(self, given: Signer | None) -> Signer:
        s = given or self.signer
        if s.address.lower() != self.owner:
            raise ValueError("withdrawals and transfers must be signed by the owner's own key")
        return s

    # ---------------------------------------------------------------- subscriptions

    async def subscribe(self, channels: Sequence[str], callback: Callback | None = None,
                        fills_after: int | None = None) -> Subscription:
        """Subscribe to channels (``book.0``, ``trades.0``, ``markets``, ``prices``,
        ``orders``, ``fills``, ``positions``, ``health``; ``*`` also gets ``dead_man``
        notices). Messages go to ``callback`` and/or the returned subscription's iterator.
        The subscription survives reconnects (fills missed meanwhile are replayed); book
        channels also keep :attr:`books`. ``fills_after`` (with ``fills``): also replay the
        fills-channel frames sent since that fill, e.g. the last one a restarted bot had
        processed; a replay the server cannot prove complete is announced with a
        ``fills_incomplete`` message on the ``fills`` channel."""
        if fills_after is not None and "fills" not in channels:
            raise ValueError("fills_after needs the fills channel")
        sub = Subscription(self, channels, callback, self.queue_size)
        if callback is None:
            sub._queue = asyncio.Queue(self.queue_size)  # nobody else will read: iterate it
        self._subs.append(sub)
        new = [c for c in channels if c != "*" and c not in self._channels]
        if fills_after is not None and "fills" not in new:
            new.append("fills")  # already subscribed: asking again replays
        if new:
            fields: dict[str, Any] = {"channels": new}
            if fills_after is not None:
                fields["fills_after"] = fills_after
            try:
                await self._request("subscribe", **fields)
            except BaseException:
                self._subs.remove(sub)
                raise
            self._channels.update(new)
        return sub

    def _check_replay(self, info: Message) -> None:
        """Count a fills replay (a subscribe response's ``fills``) and announce one the server
        could not prove complete: frames were trimmed from its record or sent by an earlier
        matcher process. The ``orders`` and ``positions`` snapshots then say where the account
        stands."""
        self.stats.fills_replayed += int(info["replayed"])
        if not info["complete"]:
            self.stats.fill_gaps += 1
            log.warning("the server could not replay every fill after seq %s", info["after"])
            self._on_frame({"type": "fills_incomplete", "channel": "fills",
                            "after": info["after"], "replayed": info["replayed"]})

    async def _drop_subscription(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        still = {c for s in self._subs for c in s.channels}
        gone = [c for c in sub.channels if c not in still and c in self._channels]
        if gone:
            self._channels.difference_update(gone)
            with contextlib.suppress(Rejected, ConnectionLost, NotConnected):
                await self._request("unsubscribe", channels=gone)
            for c in gone:
                if c.startswith("book."):
                    self.books.pop(int(c.split(".", 1)[1]), None)

    # ---------------------------------------------------------------- dead-man's switch

    async def dead_man(self, timeout_ms: int) -> Message:
        """Arm (or refresh; 0 disarms) the dead-man's switch once."""
        return dict(await self._request("dead_man", timeout_ms=timeout_ms))

    async def start_dead_man(self, timeout_ms: int, interval_s: float | None = None) -> None:
        """Arm the switch and keep refreshing it every ``interval_s`` (default a third of the
        timeout) from a background task: if this process hangs or loses the link for longer
        than ``timeout_ms``, the server cancels the orders this session placed. Re-armed after
        a reconnect."""
        await self.stop_dead_man(disarm=False)
        await self.dead_man(timeout_ms)
        self._dead_man_ms = timeout_ms
        every = interval_s if interval_s is not None else timeout_ms / 3000
        self._dead_man_task = asyncio.get_running_loop().create_task(self._keepalive(every))

    async def _keepalive(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if not self.connected:
                continue  # the reconnect re-arms it
            try:
                await self.dead_man(self._dead_man_ms)
            except (Rejected, ConnectionLost, NotConnected, asyncio.TimeoutError) as exc:
                log.warning("dead-man refresh failed: %s", exc)

    async def stop_dead_man(self, disarm: bool = True) -> None:
        """Stop refreshing and (by default) disarm the switch."""
        t, self._dead_man_task = self._dead_man_task, None
        if t is not None:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._dead_man_ms = 0
        if disarm and self.connected:
            await self.dead_man(0)


def _check_int(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int in protocol units (see crossbook.sdk.units)")


def _order_json(o: Order) -> dict[str, Any]:
    return {"owner": o.owner.lower(), "subaccount": o.subaccount, "market": o.market,
            "is_buy": o.is_buy, "reduce_only": o.reduce_only, "price": o.price, "size": o.size,
            "nonce": o.nonce, "expiry": o.expiry, "max_fee_ppm": o.max_fee_ppm}


def _place_fields(o: Order, sig: bytes, tif: str, client_id: int | None,
                  stp: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"order": _order_json(o), "signature": "0x" + sig.hex(), "tif": tif}
    if client_id is not None:
        fields["client_id"] = client_id
    if stp is not None:
        fields["stp"] = stp
    return fields
