"""One market's order book: price-time priority matching, sans I/O.

No sockets, clocks, signatures or risk live here. The caller passes ``now`` (unix seconds, an int)
to every command that can match, and layers risk and journaling on top through two hooks:

- ``position_of(owner, sub) -> int``: the sub-account's signed position in this market, read only
  for reduce-only orders (absent: every position is 0, so reduce-only orders never execute).
- ``maker_check(maker, size, price) -> bool``: called before each maker fill; False cancels that
  maker with reason RISK and matching continues with the next maker. Absent costs one ``is None``
  test per fill.

Order ids are assigned by the caller (the engine's sequence number) and must strictly increase
within a book, so an id is never reused, even after its order has ended. A refused command changes
nothing (``state_hash`` is unchanged). Every accepted order ends in exactly one of: fully filled,
``Cancelled(reason)``, or still resting.

Expired good-til-time orders are removed when matching reaches them, when modified, and by the
``expire(now)`` sweep; they are never matched after expiry. Until swept they still count for
``best_bid``/``best_ask``/``depth`` and for the post-only cross check, so the engine should sweep
whenever its clock advances.
"""

from __future__ import annotations

import hashlib
from heapq import heapify, heappop, heappush
from itertools import islice
from typing import Any, Callable, Final, Iterator

from sortedcontainers import SortedList

from matcher.native import use_source_if_stale
from matcher.orders import (
    NO_ACCT,
    NO_LEVEL,
    UINT64_MAX,
    Accepted,
    Account,
    AcctOrders,
    CancelReason,
    Cancelled,
    CommandRejected,
    Event,
    Fill,
    Level,
    Modified,
    Order,
    Owner,
    Rejected,
    RejectReason,
    Stp,
    Tif,
)

PositionOf = Callable[[Owner, int], int]
MakerCheck = Callable[[Order, int, int], bool]

# Enum attribute lookups are slow on CPython; the hot path compares against plain module ints
# (Final: the compiled build reads them as C globals, not through the module dict).
_IOC: Final = int(Tif.IOC)
_FOK: Final = int(Tif.FOK)
_POST_ONLY: Final = int(Tif.POST_ONLY)
_MARKET: Final = int(Tif.MARKET)
_EXPIRE_TAKER: Final = int(Stp.EXPIRE_TAKER)
_EXPIRE_MAKER: Final = int(Stp.EXPIRE_MAKER)
_U32: Final = 2**32 - 1
# best key of an empty side: above every real key (|key| <= 2**64 - 1), so nothing crosses it
_INF: Final = 2**64

_C_IOC: Final = CancelReason.IOC_REMAINDER
_C_FOK: Final = CancelReason.FOK
_C_STP: Final = CancelReason.STP
_C_EXPIRED: Final = CancelReason.EXPIRED
_C_RO: Final = CancelReason.REDUCE_ONLY
_C_RISK: Final = CancelReason.RISK


def _is_u64(x: object, lo: int) -> bool:
    return type(x) is int and lo <= x <= UINT64_MAX


class OrderBook:
    """The order book of one market.

    Both sides share one code path. Side 0 holds bids keyed by -price, side 1 asks keyed by
    price, so on either side the best level has the smallest key; a buyer's opposite side is
    ``int(is_buy)`` and its own is ``int(not is_buy)``. A taker's limit is turned into the
    opposite side's key space, so "crosses" is always ``best_key <= limit_key``.

    Level keys live in a ``SortedList`` per side, plus the best key cached per side (``_INF``
    when the side is empty). Levels that empty below the top stay in place to be reused: a
    market's orders cluster near the mid, so most inserts then touch no sorted structure at all.
    Each side's levels are also indexed by price (``_px``; plus the best bid's price), so the hot
    paths (a passive move, a resting place) never build a negated key: a move that lands on an
    existing level does two dict lookups, an unlink and an append. A price that names an existing
    level is known to be valid, which spares those paths the range and tick tests.
    """

    def __init__(
        self,
        market: int,
        tick_size: int,
        lot_size: int,
        *,
        position_of: PositionOf | None = None,
        maker_check: MakerCheck | None = None,
    ) -> None:
        if not (_is_u64(tick_size, 1) and _is_u64(lot_size, 1)):
            raise ValueError("tick_size and lot_size must be positive uint64 ints")
        self.market = market
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.position_of = position_of
        self.maker_check = maker_check
        self._levels: tuple[dict[int, Level], dict[int, Level]] = ({}, {})
        # the same levels keyed by price, so the hot paths need no negated (allocated) key
        self._px: tuple[dict[int, Level], dict[int, Level]] = ({}, {})
        self._bid_lv, self._ask_lv = self._px
        self._keys: tuple[SortedList, SortedList] = (SortedList(), SortedList())
        # invariant: _best[s] == _keys[s][0] and that level is non-empty (or _INF, no levels)
        self._best = [_INF, _INF]
        # the best bid's price (0: no bids), so a sell's cross test needs no negation
        self._bid_px = 0
        self._orders: dict[int, Order] = {}
        self._accts: dict[Any, AcctOrders] = {}  # (owner, sub) tuples as objects
        self._last_oid = 0
        self._fill_seq = 0
        # resting good-til-time orders by expiry: a heap of the distinct expiries and each
        # one's order ids in id order (orders register in id order). Ended orders stay in
        # their bucket and are skipped lazily; plain ints in the heap and one list append per
        # order cost a fraction of (expiry, oid) tuples, and orders mostly share expiries
        self._exp_heap: list[int] = []
        self._exp_oids: dict[int, list[Any]] = {}
        # the expiry (0: none) and bucket of the last registered order: orders mostly share
        # expiries, and a native compare spares the dict lookup. Forgotten wherever buckets
        # are removed or rebuilt (expire, _rebuild_expiry)
        self._last_exp = 0
        self._last_bucket: list[Any] = []
        self._exp_entries = 0  # ids in the buckets, live or not
        self._n_exp = 0  # live orders with an expiry, to bound the buckets' stale entries
        self._n_ro = 0  # live reduce-only orders; 0 lets matching skip position tracking

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> int | None:
        """Highest resting bid price, or None."""
        k = self._best[0]
        return None if k == _INF else -k

    def best_ask(self) -> int | None:
        """Lowest resting ask price, or None."""
        k = self._best[1]
        return None if k == _INF else k

    def _live_levels(self, side: int) -> Iterator[Level]:
        levels = self._levels[side]
        for k in self._keys[side]:
            lvl = levels[k]
            if lvl.head is not None:
                yield lvl

    def depth(self, n: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Top ``n`` levels per side as (price, total open size), best first: (bids, asks)."""
        bids = [(lvl.price, lvl.total) for lvl in islice(self._live_levels(0), n)]
        asks = [(lvl.price, lvl.total) for lvl in islice(self._live_levels(1), n)]
        return bids, asks

    def get(self, order_id: int) -> Order | None:
        """The live order with this id (read-only), or None."""
        return self._orders.get(order_id)

    def order_id_of(self, owner: Owner, sub: int, cid: int) -> int | None:
        """The live order id a sub-account's client id refers to, or None."""
        a = self._accts.get((owner, sub))
        return None if a is None else a.cids.get(cid)

    def open_orders(self, owner: Owner, sub: int) -> list[Order]:
        """A sub-account's live orders in this market, by order id."""
        a = self._accts.get((owner, sub))
        return [] if a is None else list(a.orders.values())

    def open_size(self, owner: Owner, sub: int) -> tuple[int, int]:
        """(open buy size, open sell size) of a sub-account's live orders; O(1)."""
        a = self._accts.get((owner, sub))
        return (0, 0) if a is None else (a.open_buy, a.open_sell)

    def __len__(self) -> int:
        return len(self._orders)

    def iter_side(self, is_buy: bool) -> Iterator[Order]:
        """Resting orders of one side in priority order (best price first, then FIFO)."""
        for lvl in self._live_levels(0 if is_buy else 1):
            o = lvl.head
            while o is not None:
                yield o
                o = o.next

    def state_hash(self) -> bytes:
        """blake2b-256 over the market parameters, counters and every resting order in priority
        order; equal books (same orders, same queue positions) give equal hashes."""
        h = hashlib.blake2b(digest_size=32)
        h.update(repr((self.market, self.tick_size, self.lot_size,
                       self._last_oid, self._fill_seq)).encode())
        for is_buy in (True, False):
            h.update(b"B" if is_buy else b"S")
            for o in self.iter_side(is_buy):
                h.update(repr(o.key()).encode())
                h.update(b";")
        return h.digest()

    # ------------------------------------------------------------------ commands

    def place(self, o: Order, now: int) -> list[Event]:
        """Submit a new order (the book takes ownership of ``o``). Returns its events: either
        ``[Rejected]``, or ``Accepted`` followed by fills, cancels of makers met on the way and
        the order's own terminal ``Cancelled`` if it does not end filled or resting."""
        oid = o.oid
        price = o.price
        size = o.size
        tif = o.tif
        stp = o.stp
        is_buy = o.is_buy
        # the Order constructor already refused wrong types and unknown enums (``bad``). Fast
        # path for well-formed input; the slow path only names the reason. A price that names
        # an existing level of the order's side is on tick and in range. ``not x >> 64`` is
        # ``x <= UINT64_MAX`` for x >= 0 without comparing against a boxed 2**64 - 1 (the
        # compiled build's slow path for a wide constant)
        if o.bad or not (
            ((lvl := (self._bid_lv if is_buy else self._ask_lv).get(o.px_key)) is not None
             or 0 < price and not price >> 64
             and (not price % self.tick_size or tif == _MARKET))
            and 0 < size and not size >> 64 and 0 < oid and not oid >> 64
            and not size % self.lot_size
            and 0 <= o.expiry and not o.expiry >> 64 and 0 <= o.sub <= _U32
            and (o.cid is None or 0 <= o.cid and not o.cid >> 64)
        ):
            return self._reject(o)
        if oid <= self._last_oid:
            return [Rejected(oid, RejectReason.DUPLICATE_ORDER_ID)]
        a = self._accts.get(o.acct)
        if a is not None and o.cid is not None and o.cid in a.cids:
            return [Rejected(oid, RejectReason.DUPLICATE_CLIENT_ID)]
        if o.expiry and now > o.expiry:
            return [Rejected(oid, RejectReason.EXPIRED)]
        crosses = self._best[1] <= price if is_buy else self._bid_px >= price
        if crosses and tif == _POST_ONLY:
            return [Rejected(oid, RejectReason.POST_ONLY_WOULD_CROSS)]

        self._last_oid = oid
        key = o.id_key  # the id as an object, for the event and both dicts
        if o.reduce_only:
            allowed = self._ro_allowed(o, 0)
            if allowed == 0:
                return [Accepted(oid, size), Cancelled(oid, _C_RO, size)]
            if size > allowed:
                size = o.size = allowed
            # the position hook is the caller's code: look the level up again after it
            lvl = (self._bid_lv if is_buy else self._ask_lv).get(o.px_key)
        ev: list[Event] = [Accepted(key, size)]
        if crosses:
            limkey = price if is_buy else -price
            check = self.maker_check
            if tif == _FOK:
                plan = self._fok_plan(o, limkey, now)
                if plan is None:
                    ev.append(Cancelled(oid, _C_FOK, size))
                    return ev
                if check is not None:
                    check = _replay_vetoes(plan)
            if not self._match(o, limkey, now, ev, check) or o.size == 0:
                return ev
            # matching only changes the other side, unless a hook re-entered the book
            lvl = (self._bid_lv if is_buy else self._ask_lv).get(o.px_key)
        elif tif == _FOK:
            ev.append(Cancelled(oid, _C_FOK, size))
            return ev
        if tif == _IOC or tif == _MARKET:
            ev.append(Cancelled(oid, _C_IOC, o.size))
            return ev
        if a is None:
            a = self._accts[o.acct] = AcctOrders()
        if lvl is None:
            self._link(o)
        else:
            # _link, inlined for the usual case of an existing level (matching only touched the
            # other side, so ``lvl`` is still this side's level at ``price``)
            tail = lvl.tail
            if tail is None:
                lvl.head = o
                o.prev = None
            else:
                tail.next = o
                o.prev = tail
            lvl.tail = o
            lvl.total += o.size
            o.level = lvl
        if o.cid is None and not o.reduce_only and not o.expiry:
            # _register, inlined for a plain order
            o.book_acct = a
            self._orders[key] = o
            a.orders[key] = o
            if is_buy:
                a.open_buy += o.size
            else:
                a.open_sell += o.size
        else:
            self._register(o, a)
        return ev

    def cancel(self, order_id: Any, reason: CancelReason = CancelReason.USER) -> list[Event]:
        """Cancel a live order by id. The caller has checked that the requester may do so."""
        try:
            o = self._orders[order_id]
        except KeyError:
            return [CommandRejected(order_id, RejectReason.UNKNOWN_ORDER)]
        self._drop(o)
        return [Cancelled(order_id, reason, o.size)]

    def withdraw(self, order_id: Any) -> bool:
        """``cancel`` (reason USER) without its event, for a caller that reports the end
        itself (the engine's cancel-replace); False when no such order is live."""
        o = self._orders.get(order_id)
        if o is None:
            return False
        self._drop(o)
        return True

    def cancel_by_client_id(
        self, owner: Owner, sub: int, cid: int, reason: CancelReason = CancelReason.USER
    ) -> list[Event]:
        """Cancel a sub-account's live order by its client id."""
        oid = self.order_id_of(owner, sub, cid)
        if oid is None:
            return [CommandRejected(0, RejectReason.UNKNOWN_ORDER)]
        return self.cancel(oid, reason)

    def cancel_all(
        self,
        owner: Owner,
        sub: int,
        reason: CancelReason = CancelReason.MASS_CANCEL,
        is_buy: bool | None = None,
    ) -> list[Event]:
        """Cancel all of a sub-account's live orders in this market (optionally one side only),
        in order id order. Use reason DEAD_MAN / LIQUIDATION for those triggers."""
        a = self._accts.get((owner, sub))
        if a is None:
            return []
        ev: list[Event] = []
        for o in list(a.orders.values()):
            if is_buy is None or o.is_buy == is_buy:
                self._drop(o)
                ev.append(Cancelled(o.oid, reason, o.size))
        return ev

    def modify(self, order_id: Any, price: Any, size: Any, now: int) -> list[Event]:
        """Change a live order's price and open size.

        Same price and a size no larger than the open size keeps queue priority. Any other change
        re-queues the order atomically, keeping its id, client id and flags: it may trade as a
        taker at the new price (the order's own STP mode applies) and rests at the back of its new
        level. A post-only order that would cross refuses the modify and stays as it was; a
        reduce-only order is capped to its position as if new. An expired order is removed
        (``Cancelled(EXPIRED)``) instead.
        """
        try:
            o = self._orders[order_id]
        except KeyError:
            return [CommandRejected(order_id, RejectReason.UNKNOWN_ORDER)]
        if type(price) is not int or type(size) is not int:
            return [CommandRejected(order_id, RejectReason.BAD_TYPE)]
        return self._modify(o, price, size, now, order_id, price)

    def _modify(self, o: Order, price: int, size: int, now: int, order_id: Any,
                price_key: Any) -> list[Event]:
        """``modify`` of a live order with int arguments. ``order_id`` and ``price_key`` are the
        caller's objects for the id and the price: the compiled build looks levels up and
        builds events with them instead of boxing the typed ints again."""
        old = o.size
        if o.is_buy:
            levels = self._bid_lv
            crosses = self._best[1] <= price
        else:
            levels = self._ask_lv
            crosses = self._bid_px >= price
        nl = levels.get(price_key)
        # validity: a price that names an existing level is on tick and in range, and the
        # order's current size is a valid size, so the common move skips those tests
        if not (
            (size == old or (0 < size <= UINT64_MAX and not size % self.lot_size))
            and (nl is not None or (0 < price <= UINT64_MAX and not price % self.tick_size))
        ):
            return [CommandRejected(order_id, self._classify_px(price, size, False))]
        exp = o.expiry
        if exp and now > exp:
            self._drop(o)
            return [Cancelled(order_id, _C_EXPIRED, o.size)]
        lvl: Level = o.level
        if lvl is nl and size <= old:
            if size < old:
                d = old - size
                o.size = size
                lvl.total -= d
                if o.is_buy:
                    o.book_acct.open_buy -= d
                else:
                    o.book_acct.open_sell -= d
            return [Modified(order_id, price_key, size, True)]
        # the common move: a passive re-queue of a plain order (no cross, not reduce-only)
        if crosses or o.reduce_only:
            return self._modify_slow(o, price, size, now)
        prev = o.prev
        nxt = o.next
        if prev is None:
            if nxt is None:
                lvl.head = None
                self._emptied(lvl, lvl.key > 0)
                # emptying the best level may have deleted empty levels next to it
                nl = levels.get(price_key)
            else:
                lvl.head = nxt
                nxt.prev = None
                lvl.total -= old
        else:
            prev.next = nxt
            if nxt is None:
                lvl.tail = prev
            else:
                nxt.prev = prev
            lvl.total -= old
        o.price = price
        if size != old:
            o.size = size
            if o.is_buy:
                o.book_acct.open_buy += size - old
            else:
                o.book_acct.open_sell += size - old
        if nl is None:
            self._link(o)
            return [Modified(order_id, price_key, size, False)]
        lvl = nl
        tail = lvl.tail
        if tail is None:
            lvl.head = o
            o.prev = None
        else:
            tail.next = o
            o.prev = tail
        o.next = None
        lvl.tail = o
        lvl.total += size
        o.level = lvl
        return [Modified(order_id, price_key, size, False)]

    def _modify_slow(self, o: Order, price: int, size: int, now: int) -> list[Event]:
        """``modify`` of a valid, unexpired order that needs a re-queue and may cross or is
        reduce-only."""
        order_id = o.oid
        old = o.size
        is_buy = o.is_buy
        a = o.book_acct
        limkey = price if is_buy else -price
        crosses = self._best[is_buy] <= limkey
        if crosses and o.tif == _POST_ONLY:
            return [CommandRejected(order_id, RejectReason.POST_ONLY_WOULD_CROSS)]
        if o.reduce_only:
            allowed = self._ro_allowed(o, 0)
            if allowed == 0:
                self._drop(o)
                return [Cancelled(order_id, _C_RO, old)]
            if size > allowed:
                size = allowed
        # re-queue: unlink from the old level and append to the new one, inlined because moves
        # are most of an exchange's traffic
        lvl = o.level
        prev = o.prev
        nxt = o.next
        if prev is None:
            lvl.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            lvl.tail = prev
        else:
            nxt.prev = prev
        side = not is_buy
        if lvl.head is None:
            self._emptied(lvl, side)
        else:
            lvl.total -= old
        o.price = price
        o.size = size
        ev: list[Event] = [Modified(order_id, price, size, False)]
        if crosses:
            if is_buy:
                a.open_buy -= old
            else:
                a.open_sell -= old
            if not self._match(o, limkey, now, ev, self.maker_check) or o.size == 0:
                self._unregister(o, a)
                return ev
            old = 0
            size = o.size
        dest = self._px[side].get(price)
        if dest is None:
            self._link(o)
        else:
            lvl = dest
            tail = lvl.tail
            if tail is None:
                lvl.head = o
                o.prev = None
            else:
                tail.next = o
                o.prev = tail
            o.next = None
            lvl.tail = o
            lvl.total += size
            o.level = lvl
        if is_buy:
            a.open_buy += size - old
        else:
            a.open_sell += size - old
        return ev

    def expire(self, now: int) -> list[Event]:
        """Remove every resting order whose expiry is before ``now``, by (expiry, order id)."""
        h = self._exp_heap
        buckets = self._exp_oids
        orders = self._orders
        ev: list[Event] = []
        if h and h[0] < now:
            self._last_exp = 0  # its bucket may go
        while h and h[0] < now:
            oids = buckets.pop(heappop(h))
            self._exp_entries -= len(oids)
            for oid in sorted(oids):
                o = orders.get(oid)
                # ids are never reused and expiry never changes, so a live id means a live
                # entry
                if o is not None:
                    self._drop(o)
                    ev.append(Cancelled(oid, _C_EXPIRED, o.size))
        return ev

    def load_resting(self, orders: list[Order], last_oid: int, fill_seq: int) -> None:
        """Rebuild an empty book from a snapshot (used by the matcher's journal recovery).

        ``orders`` are the resting orders in priority order (``iter_side(True)`` then
        ``iter_side(False)`` of the saved book), ``last_oid``/``fill_seq`` its counters. No
        validation and no matching: the orders came out of a valid book. They are registered
        in order-id order so per-account iteration (mass cancel) matches the original book.
        """
        if self._orders:
            raise ValueError("load_resting needs an empty book")
        for o in orders:
            self._link(o)
        for o in sorted(orders, key=lambda x: x.oid):
            a = self._accts.get(o.acct)
            if a is None:
                a = self._accts[o.acct] = AcctOrders()
            self._register(o, a)
        self._last_oid = last_oid
        self._fill_seq = fill_seq

    # ------------------------------------------------------------------ internals

    def _reject(self, o: Order) -> list[Event]:
        """The ``Rejected`` event of an order the fast validity test refused, naming its first
        problem (type and enum problems were found by the Order constructor)."""
        if o.bad:
            assert o.raw is not None
            return [Rejected(o.raw[0], RejectReason(o.bad))]  # type: ignore[arg-type]
        cid = o.cid
        if not (0 < o.oid <= UINT64_MAX and 0 <= o.expiry <= UINT64_MAX and 0 <= o.sub <= _U32):
            reason = RejectReason.OUT_OF_RANGE
        elif cid is not None and not 0 <= cid <= UINT64_MAX:
            reason = RejectReason.OUT_OF_RANGE
        else:
            reason = self._classify_px(o.price, o.size, o.tif == _MARKET)
        return [Rejected(o.oid, reason)]

    def _classify_px(self, price: int, size: int, market: bool) -> RejectReason:
        if price > UINT64_MAX or size > UINT64_MAX:
            return RejectReason.OUT_OF_RANGE
        if price <= 0:
            return RejectReason.BAD_PRICE
        if size <= 0:
            return RejectReason.BAD_SIZE
        if price % self.tick_size and not market:
            return RejectReason.OFF_TICK
        return RejectReason.OFF_LOT

    def _ro_allowed(self, o: Order, delta: int) -> int:
        """How much a reduce-only order may still trade: the position it reduces (``delta`` is
        this command's fills so far for that sub-account), rounded down to the lot."""
        pos = self.position_of(o.owner, o.sub) if self.position_of is not None else 0
        pos += delta
        allowed = -pos if o.is_buy else pos
        if allowed <= 0:
            return 0
        return allowed - allowed % self.lot_size

    def _match(
        self, t: Order, limkey: int, now: int, ev: list[Event], check: MakerCheck | None
    ) -> bool:
        """Trade taker ``t`` against the opposite side up to ``limkey``. Leaves ``t.size`` at its
        unfilled remainder; returns False if STP cancelled the taker (event already emitted)."""
        is_buy = t.is_buy
        best = self._best
        levels = self._levels[is_buy]
        rem = t.size
        owner = t.owner
        tid = t.oid
        # makers' fills earlier in this command change their positions; only reduce-only makers
        # read them, so track them only when such orders exist
        deltas: dict[Account, int] | None = {} if self._n_ro else None
        while True:
            k = best[is_buy]
            if k > limkey:
                break
            lvl = levels[k]
            price = lvl.price
            m = lvl.head
            while m is not None:
                nxt = m.next
                exp = m.expiry
                if exp and now > exp:
                    self._drop(m)
                    ev.append(Cancelled(m.oid, _C_EXPIRED, m.size))
                    m = nxt
                    continue
                if m.owner == owner:
                    mode = t.stp
                    if mode != _EXPIRE_TAKER:
                        self._drop(m)
                        ev.append(Cancelled(m.oid, _C_STP, m.size))
                    if mode != _EXPIRE_MAKER:
                        t.size = rem
                        ev.append(Cancelled(tid, _C_STP, rem))
                        return False
                    m = nxt
                    continue
                msize = m.size
                q = rem if rem < msize else msize
                allowed = 0
                if m.reduce_only:
                    allowed = self._ro_allowed(m, deltas.get(m.acct, 0) if deltas else 0)
                    if allowed == 0:
                        self._drop(m)
                        ev.append(Cancelled(m.oid, _C_RO, msize))
                        m = nxt
                        continue
                    if allowed < q:
                        q = allowed
                if check is not None and not check(m, q, price):
                    self._drop(m)
                    ev.append(Cancelled(m.oid, _C_RISK, msize))
                    m = nxt
                    continue
                self._fill_seq += 1
                rem -= q
                mrem = msize - q
                ev.append(Fill(self._fill_seq, tid, m.oid, price, q, rem, mrem, is_buy))
                if deltas is not None:
                    deltas[m.acct] = deltas.get(m.acct, 0) + (q if m.is_buy else -q)
                if mrem == 0:
                    self._drop(m)
                    m.size = 0
                else:
                    m.size = mrem
                    lvl.total -= q
                    if m.is_buy:
                        m.book_acct.open_buy -= q
                    else:
                        m.book_acct.open_sell -= q
                    if q == allowed:
                        # a reduce-only maker that just closed its position cannot rest on
                        self._drop(m)
                        ev.append(Cancelled(m.oid, _C_RO, mrem))
                if rem == 0:
                    t.size = 0
                    return True
                m = nxt
        t.size = rem
        return True

    def _fok_plan(self, t: Order, limkey: int, now: int) -> dict[int, bool] | None:
        """Walk the book as ``_match`` would, without changing anything. Returns the maker-check
        verdicts met on the way (so execution asks the hook once per maker) if ``t`` would fill
        completely, else None."""
        levels = self._levels[t.is_buy]
        check = self.maker_check
        need = t.size
        verdicts: dict[int, bool] = {}
        deltas: dict[Account, int] = {}
        for k in self._keys[t.is_buy].irange(maximum=limkey):
            lvl = levels[k]
            m = lvl.head
            while m is not None:
                if m.expiry and now > m.expiry:
                    pass
                elif m.owner == t.owner:
                    if t.stp != _EXPIRE_MAKER:
                        return None
                else:
                    q = need if need < m.size else m.size
                    ok = True
                    if m.reduce_only:
                        allowed = self._ro_allowed(m, deltas.get(m.acct, 0))
                        ok = allowed > 0
                        q = min(q, allowed)
                    if ok and check is not None:
                        ok = verdicts[m.oid] = check(m, q, lvl.price)
                    if ok:
                        need -= q
                        deltas[m.acct] = deltas.get(m.acct, 0) + (q if m.is_buy else -q)
                        if need == 0:
                            return verdicts
                m = m.next
        return None

    def _link(self, o: Order) -> None:
        """Append ``o`` at the back of its price level, creating the level if needed."""
        price = o.price
        side = not o.is_buy
        k = price if side else -price
        levels = self._levels[side]
        lvl = levels.get(k)
        if lvl is None:
            lvl = levels[k] = self._px[side][price] = Level(k, price)
            self._keys[side].add(k)
            if k < self._best[side]:
                self._best[side] = k
                if not side:
                    self._bid_px = price
            elif len(levels) > 2 * len(self._orders) + 1024:
                self._purge_empty(side)
        tail = lvl.tail
        if tail is None:
            lvl.head = o
            o.prev = None
        else:
            tail.next = o
            o.prev = tail
        o.next = None
        lvl.tail = o
        lvl.total += o.size
        o.level = lvl

    def _emptied(self, lvl: Level, side: int) -> None:
        """Bookkeeping for a level whose last order just left."""
        lvl.total = 0
        lvl.tail = None
        if lvl.key == self._best[side]:
            # keep the invariant that the best key names a live level
            keys = self._keys[side]
            levels = self._levels[side]
            px = self._px[side]
            while keys and levels[keys[0]].head is None:
                del px[levels.pop(keys.pop(0)).price]
            best = self._best[side] = keys[0] if keys else _INF
            if not side:
                self._bid_px = 0 if best == _INF else -best

    def _purge_empty(self, side: int) -> None:
        """Drop all empty levels of a side, so orders spread over many prices once and then
        cancelled cannot grow the book without bound."""
        levels = self._levels[side]
        keys = self._keys[side]
        empty = [k for k, lvl in levels.items() if lvl.head is None]
        for k in empty:
            del levels[k]
            del self._px[side][-k if k < 0 else k]
        keys.clear()
        keys.update(levels)

    def _register(self, o: Order, a: AcctOrders) -> None:
        """Record a newly resting order (already linked into its level)."""
        oid = o.id_key
        o.book_acct = a
        self._orders[oid] = o
        a.orders[oid] = o
        if o.cid is not None:
            a.cids[o.cid] = oid
        if o.is_buy:
            a.open_buy += o.size
        else:
            a.open_sell += o.size
        if o.reduce_only:
            self._n_ro += 1
        if o.expiry:
            self._n_exp += 1
            if o.expiry == self._last_exp:
                self._last_bucket.append(oid)
            else:
                exp = o.exp_key  # the expiry as an object (no boxing for the dict)
                bucket = self._exp_oids.get(exp)
                if bucket is None:
                    bucket = self._exp_oids[exp] = [oid]
                    heappush(self._exp_heap, exp)
                else:
                    bucket.append(oid)
                self._last_exp = o.expiry
                self._last_bucket = bucket
            self._exp_entries += 1
            if self._exp_entries > 2 * self._n_exp + 1024:
                self._rebuild_expiry()

    def _rebuild_expiry(self) -> None:
        """Ended orders leave stale ids behind; rebuild the buckets from the live orders so
        they stay O(live). ``_orders`` iterates in registration (= id) order."""
        buckets: dict[int, list[Any]] = {}
        for x in self._orders.values():
            exp = x.expiry
            if exp:
                bucket = buckets.get(exp)
                if bucket is None:
                    buckets[exp] = [x.id_key]
                else:
                    bucket.append(x.id_key)
        self._exp_oids = buckets
        self._exp_heap = list(buckets)
        heapify(self._exp_heap)
        self._last_exp = 0
        self._exp_entries = self._n_exp

    def _unregister(self, o: Order, a: AcctOrders) -> None:
        """Forget a live order that is no longer in any level (its open size already removed)."""
        oid = o.id_key
        del self._orders[oid]
        del a.orders[oid]
        if o.cid is not None:
            del a.cids[o.cid]
        if o.reduce_only:
            self._n_ro -= 1
        if o.expiry:
            self._n_exp -= 1
        o.level = NO_LEVEL
        o.book_acct = NO_ACCT

    def _drop(self, o: Order) -> None:
        """Remove a resting order completely; ``o.size`` keeps its last open size."""
        lvl = o.level
        prev = o.prev
        nxt = o.next
        if prev is None:
            lvl.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            lvl.tail = prev
        else:
            nxt.prev = prev
        o.prev = o.next = None
        if lvl.head is None:
            self._emptied(lvl, not o.is_buy)
        else:
            lvl.total -= o.size
        a = o.book_acct
        if o.is_buy:
            a.open_buy -= o.size
        else:
            a.open_sell -= o.size
        # _unregister, inlined: cancels and fills end here
        oid = o.id_key
        del self._orders[oid]
        del a.orders[oid]
        if o.cid is not None:
            del a.cids[o.cid]
        if o.reduce_only:
            self._n_ro -= 1
        if o.expiry:
            self._n_exp -= 1
        o.level = NO_LEVEL
        o.book_acct = NO_ACCT


def _replay_vetoes(verdicts: dict[int, bool]) -> MakerCheck:
    """A maker check that answers with the verdicts a FOK plan already obtained."""

    def check(m: Order, size: int, price: int) -> bool:
        return verdicts[m.oid]

    return check

# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
