"""A naive, obviously-correct order book used only by tests (lock-step against matcher.book).

Everything is a linear scan over one list of resting orders; priority is recomputed from scratch
(best price, then arrival sequence) for every maker taken. Fill-or-kill is done the blunt way:
snapshot the whole state, try as IOC, restore if it did not fill completely.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from matcher.orders import (
    UINT64_MAX,
    Accepted,
    CancelReason,
    Cancelled,
    CommandRejected,
    Event,
    Fill,
    Modified,
    Order,
    Rejected,
    RejectReason,
    Stp,
    Tif,
)


class RefOrder:
    """A resting order of the reference book."""

    def __init__(self, o: Order, seq: int) -> None:
        self.oid = o.oid
        self.owner = o.owner
        self.sub = o.sub
        self.cid = o.cid
        self.is_buy = o.is_buy
        self.price = o.price
        self.size = o.size
        self.tif = o.tif
        self.stp = o.stp
        self.reduce_only = o.reduce_only
        self.expiry = o.expiry
        self.seq = seq

    def key(self) -> tuple[object, ...]:
        """Same canonical content as ``matcher.orders.Order.key``."""
        return (self.oid, self.owner, self.sub, self.cid, self.is_buy, self.price, self.size,
                int(self.tif), int(self.stp), self.reduce_only, self.expiry)


def _prio(o: RefOrder) -> tuple[int, int]:
    return (-o.price if o.is_buy else o.price, o.seq)


class ReferenceBook:
    """Same public semantics as ``matcher.book.OrderBook`` for place/cancel/modify/expire."""

    def __init__(
        self,
        market: int,
        tick_size: int,
        lot_size: int,
        *,
        position_of: Callable[[Any, int], int] | None = None,
        maker_check: Callable[[Any, int, int], bool] | None = None,
    ) -> None:
        self.market = market
        self.tick = tick_size
        self.lot = lot_size
        self.position_of = position_of
        self.maker_check = maker_check
        self.resting: list[RefOrder] = []
        self.seq = 0
        self.last_oid = 0
        self.fill_seq = 0

    # ---------------------------------------------------------------- queries

    def side(self, is_buy: bool) -> list[RefOrder]:
        """Resting orders of one side in priority order."""
        return sorted((o for o in self.resting if o.is_buy == is_buy), key=_prio)

    def snapshot(self) -> tuple[object, ...]:
        """Everything the real book's state hash covers."""
        return (self.last_oid, self.fill_seq,
                [o.key() for o in self.side(True)], [o.key() for o in self.side(False)])

    def find(self, oid: int) -> RefOrder | None:
        """The resting order with this id."""
        for o in self.resting:
            if o.oid == oid:
                return o
        return None

    def open_size(self, owner: Any, sub: int) -> tuple[int, int]:
        """(open buy, open sell) of a sub-account."""
        mine = [o for o in self.resting if o.owner == owner and o.sub == sub]
        return (sum(o.size for o in mine if o.is_buy), sum(o.size for o in mine if not o.is_buy))

    def depth(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Top n aggregated levels per side."""
        out = []
        for is_buy in (True, False):
            levels: dict[int, int] = {}
            for o in self.side(is_buy):
                levels[o.price] = levels.get(o.price, 0) + o.size
            out.append(list(levels.items())[:n])
        return out[0], out[1]

    # ---------------------------------------------------------------- helpers

    def _reason(self, o: Order) -> RejectReason | None:
        ints = (o.oid, o.price, o.size, o.expiry, o.sub)
        if any(type(x) is not int for x in ints) or type(o.is_buy) is not bool \
                or type(o.reduce_only) is not bool or (o.cid is not None and type(o.cid) is not int):
            return RejectReason.BAD_TYPE
        if o.tif not in list(Tif) or o.stp not in list(Stp):
            return RejectReason.BAD_ENUM
        if o.oid < 1 or o.oid > UINT64_MAX or o.expiry < 0 or o.expiry > UINT64_MAX \
                or o.sub < 0 or o.sub >= 2**32 or (o.cid is not None and not 0 <= o.cid <= UINT64_MAX):
            return RejectReason.OUT_OF_RANGE
        return self._px_reason(o.price, o.size, o.tif == Tif.MARKET)

    def _px_reason(self, price: Any, size: Any, market: bool) -> RejectReason | None:
        if type(price) is not int or type(size) is not int:
            return RejectReason.BAD_TYPE
        if price > UINT64_MAX or size > UINT64_MAX:
            return RejectReason.OUT_OF_RANGE
        if price <= 0:
            return RejectReason.BAD_PRICE
        if size <= 0:
            return RejectReason.BAD_SIZE
        if price % self.tick != 0 and not market:
            return RejectReason.OFF_TICK
        if size % self.lot != 0:
            return RejectReason.OFF_LOT
        return None

    def _crosses(self, is_buy: bool, price: int) -> bool:
        opp = self.side(not is_buy)
        if not opp:
            return False
        return opp[0].price <= price if is_buy else opp[0].price >= price

    def _allowed(self, o: Any, fills: dict[tuple[Any, int], int]) -> int:
        pos = self.position_of(o.owner, o.sub) if self.position_of else 0
        pos += fills.get((o.owner, o.sub), 0)
        allowed = -pos if o.is_buy else pos
        return max(allowed, 0) // self.lot * self.lot

    def _remove(self, o: RefOrder) -> None:
        self.resting.remove(o)

    def _rest(self, o: RefOrder) -> None:
        self.seq += 1
        o.seq = self.seq
        self.resting.append(o)

    def _match(self, t: RefOrder, now: int, ev: list[Event]) -> bool:
        """Returns False if STP cancelled the taker."""
        fills: dict[tuple[Any, int], int] = {}
        while t.size > 0:
            cands = [m for m in self.side(not t.is_buy)
                     if (m.price <= t.price if t.is_buy else m.price >= t.price)]
            if not cands:
                break
            m = cands[0]
            if m.expiry and now > m.expiry:
                self._remove(m)
                ev.append(Cancelled(m.oid, CancelReason.EXPIRED, m.size))
                continue
            if m.owner == t.owner:
                if t.stp in (Stp.EXPIRE_MAKER, Stp.EXPIRE_BOTH):
                    self._remove(m)
                    ev.append(Cancelled(m.oid, CancelReason.STP, m.size))
                if t.stp in (Stp.EXPIRE_TAKER, Stp.EXPIRE_BOTH):
                    ev.append(Cancelled(t.oid, CancelReason.STP, t.size))
                    return False
                continue
            q = min(t.size, m.size)
            closes = False
            if m.reduce_only:
                allowed = self._allowed(m, fills)
                if allowed == 0:
                    self._remove(m)
                    ev.append(Cancelled(m.oid, CancelReason.REDUCE_ONLY, m.size))
                    continue
                if allowed <= q:
                    q = allowed
                    closes = True
            if self.maker_check is not None and not self.maker_check(m, q, m.price):
                self._remove(m)
                ev.append(Cancelled(m.oid, CancelReason.RISK, m.size))
                continue
            self.fill_seq += 1
            t.size -= q
            m.size -= q
            ev.append(Fill(self.fill_seq, t.oid, m.oid, m.price, q, t.size, m.size, t.is_buy))
            key = (m.owner, m.sub)
            fills[key] = fills.get(key, 0) + (q if m.is_buy else -q)
            if m.size == 0:
                self._remove(m)
            elif closes:
                self._remove(m)
                ev.append(Cancelled(m.oid, CancelReason.REDUCE_ONLY, m.size))
        return True

    # ---------------------------------------------------------------- commands

    def place(self, spec: Order, now: int) -> list[Event]:
        """Submit a new order (``spec`` is only read)."""
        reason = self._reason(spec)
        if reason is None and spec.oid <= self.last_oid:
            reason = RejectReason.DUPLICATE_ORDER_ID
        if reason is None and spec.cid is not None and any(
                o.owner == spec.owner and o.sub == spec.sub and o.cid == spec.cid
                for o in self.resting):
            reason = RejectReason.DUPLICATE_CLIENT_ID
        if reason is None and spec.expiry and now > spec.expiry:
            reason = RejectReason.EXPIRED
        crosses = reason is None and self._crosses(spec.is_buy, spec.price)
        if reason is None and crosses and spec.tif == Tif.POST_ONLY:
            reason = RejectReason.POST_ONLY_WOULD_CROSS
        if reason is not None:
            return [Rejected(spec.oid, reason)]
        self.last_oid = spec.oid
        t = RefOrder(spec, 0)
        if t.reduce_only:
            allowed = self._allowed(t, {})
            if allowed == 0:
                return [Accepted(t.oid, t.size), Cancelled(t.oid, CancelReason.REDUCE_ONLY, t.size)]
            t.size = min(t.size, allowed)
        accepted = t.size
        ev: list[Event] = [Accepted(t.oid, accepted)]
        if t.tif == Tif.FOK:
            saved = copy.deepcopy((self.resting, self.seq, self.fill_seq))
            trial: list[Event] = []
            if self._match(t, now, trial) and t.size == 0:
                return ev + trial
            self.resting, self.seq, self.fill_seq = saved
            return ev + [Cancelled(t.oid, CancelReason.FOK, accepted)]
        if not self._match(t, now, ev):
            return ev
        if t.size == 0:
            return ev
        if t.tif in (Tif.IOC, Tif.MARKET):
            ev.append(Cancelled(t.oid, CancelReason.IOC_REMAINDER, t.size))
            return ev
        self._rest(t)
        return ev

    def cancel(self, oid: int, reason: CancelReason = CancelReason.USER) -> list[Event]:
        """Cancel by order id."""
        o = self.find(oid)
        if o is None:
            return [CommandRejected(oid, RejectReason.UNKNOWN_ORDER)]
        self._remove(o)
        return [Cancelled(oid, reason, o.size)]

    def cancel_by_client_id(self, owner: Any, sub: int, cid: int,
                            reason: CancelReason = CancelReason.USER) -> list[Event]:
        """Cancel by (sub-account, client id)."""
        for o in self.resting:
            if o.owner == owner and o.sub == sub and o.cid == cid:
                return self.cancel(o.oid, reason)
        return [CommandRejected(0, RejectReason.UNKNOWN_ORDER)]

    def cancel_all(self, owner: Any, sub: int, reason: CancelReason = CancelReason.MASS_CANCEL,
                   is_buy: bool | None = None) -> list[Event]:
        """Cancel a sub-account's orders by ascending order id."""
        mine = sorted((o for o in self.resting if o.owner == owner and o.sub == sub
                       and (is_buy is None or o.is_buy == is_buy)), key=lambda o: o.oid)
        ev: list[Event] = []
        for o in mine:
            self._remove(o)
            ev.append(Cancelled(o.oid, reason, o.size))
        return ev

    def modify(self, oid: int, price: int, size: int, now: int) -> list[Event]:
        """Change price/size; see OrderBook.modify for the rules."""
        o = self.find(oid)
        if o is None:
            return [CommandRejected(oid, RejectReason.UNKNOWN_ORDER)]
        reason = self._px_reason(price, size, False)
        if reason is not None:
            return [CommandRejected(oid, reason)]
        if o.expiry and now > o.expiry:
            self._remove(o)
            return [Cancelled(oid, CancelReason.EXPIRED, o.size)]
        if price == o.price and size <= o.size:
            o.size = size
            return [Modified(oid, price, size, True)]
        crosses = self._crosses(o.is_buy, price)
        if crosses and o.tif == Tif.POST_ONLY:
            return [CommandRejected(oid, RejectReason.POST_ONLY_WOULD_CROSS)]
        if o.reduce_only:
            allowed = self._allowed(o, {})
            if allowed == 0:
                self._remove(o)
                return [Cancelled(oid, CancelReason.REDUCE_ONLY, o.size)]
            size = min(size, allowed)
        self._remove(o)
        o.price = price
        o.size = size
        ev: list[Event] = [Modified(oid, price, size, False)]
        if not self._match(o, now, ev) or o.size == 0:
            return ev
        self._rest(o)
        return ev

    def expire(self, now: int) -> list[Event]:
        """Remove orders whose expiry is before now, by (expiry, oid)."""
        gone = sorted((o for o in self.resting if o.expiry and o.expiry < now),
                      key=lambda o: (o.expiry, o.oid))
        ev: list[Event] = []
        for o in gone:
            self._remove(o)
            ev.append(Cancelled(o.oid, CancelReason.EXPIRED, o.size))
        return ev
