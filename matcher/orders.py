"""Order, enum and event types of the matcher's engine core (one market's order book).

All prices and sizes are integers in protocol units (docs/protocol.md section 1: price scale 1e8,
size scale 1e8). Nothing here ever holds a float.

Events are ``msgspec.Struct`` values: constructing one costs about a third of an equivalent
``__slots__`` class (measured on CPython 3.11), they are immutable, and the journal can encode
them directly (``tag=True`` makes a union of them decodable).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final, Union

import msgspec

from matcher.native import use_source_if_stale

UINT64_MAX = 2**64 - 1

# An owner is whatever the caller uses to identify an address (bytes, a hex str or an int); the
# book only compares owners for equality (self-trade prevention) and repr()s them for the hash.
Owner = Union[bytes, str, int]
Account = tuple[Owner, int]


class Tif(IntEnum):
    """Time in force / order type. A good-til-time order is GTC or POST_ONLY with an expiry."""

    GTC = 0
    IOC = 1
    FOK = 2
    POST_ONLY = 3
    # IOC whose price is a protection bound from the caller, so it need not be on a tick.
    MARKET = 4


class Stp(IntEnum):
    """Self-trade prevention mode, chosen by the taker's order.

    There is no "allow": the clearinghouse refuses fills between the same sub-account, and STP
    applies per owner (across that owner's sub-accounts) so it always covers that case.
    """

    EXPIRE_TAKER = 0
    EXPIRE_MAKER = 1
    EXPIRE_BOTH = 2


class RejectReason(IntEnum):
    """Why a command was refused; a refused command changes no state."""

    BAD_TYPE = 1  # a numeric field is not an int (bool and float are refused)
    OUT_OF_RANGE = 2  # above 2**64-1 (sub-account: 2**32-1), or a negative id/expiry
    BAD_SIZE = 3  # size <= 0
    BAD_PRICE = 4  # price <= 0
    OFF_TICK = 5
    OFF_LOT = 6
    DUPLICATE_ORDER_ID = 7  # order ids must strictly increase within a book
    DUPLICATE_CLIENT_ID = 8  # client id already used by a live order of the sub-account
    UNKNOWN_ORDER = 9
    EXPIRED = 10  # good-til-time order already past its expiry on arrival
    POST_ONLY_WOULD_CROSS = 11
    BAD_ENUM = 12  # tif or stp not a known value


class CancelReason(IntEnum):
    """Why a live (accepted) order ended without being fully filled."""

    USER = 1
    IOC_REMAINDER = 2  # IOC / market order remainder after matching
    FOK = 3  # fill-or-kill could not fill completely; nothing traded
    STP = 4
    EXPIRED = 5
    REDUCE_ONLY = 6  # reduce-only order would increase or flip the position
    MASS_CANCEL = 7
    DEAD_MAN = 8
    LIQUIDATION = 9
    RISK = 10  # the maker-fill veto hook refused this maker
    AGENT_REVOKED = 11  # signed by an agent key the owner revoked (the contract would reject its fills)
    HALT = 12  # the operator halted trading and cancelled the resting orders with it


# tif / stp values an order may carry (both enums are contiguous from 0)
TIF_VALUES: Final = frozenset(int(t) for t in Tif)
STP_VALUES: Final = frozenset(int(s) for s in Stp)


class Level:
    """One price level of a book: an intrusive doubly linked FIFO of orders plus its total open
    size. A level that empties is kept (and reused) unless it is the side's best level; see
    ``OrderBook._emptied``."""

    __slots__ = ("key", "price", "head", "tail", "total")

    def __init__(self, key: int, price: int) -> None:
        self.key = key
        self.price = price
        self.head: Order | None = None
        self.tail: Order | None = None
        self.total = 0


class AcctOrders:
    """A sub-account's live orders in one book and its open size per side (O(1) reads)."""

    __slots__ = ("orders", "cids", "open_buy", "open_sell")

    def __init__(self) -> None:
        # insertion order = order id order, so mass cancels are deterministic
        self.orders: dict[int, Order] = {}
        self.cids: dict[int, int] = {}
        self.open_buy = 0
        self.open_sell = 0


class Order:
    """A live order. The caller builds it for ``OrderBook.place`` and then hands it over.

    ``size`` is the open (remaining) size and is updated as the order fills; ``price`` and
    ``size`` change on modify. Treat orders returned by book queries as read-only.
    ``prev``/``next`` link the order into its price level's FIFO (intrusive list, O(1) cancel).
    An Order object belongs to one book for its whole life: never submit the same object twice.

    The constructor is the type boundary: its fields are typed (ints, bools) so the book's hot
    path (compiled with mypyc by ``make build``) never meets a float or a str. Raw arguments of
    the wrong type or a tif / stp outside its enum are recorded instead (``bad`` is the
    RejectReason, ``raw`` the arguments as given) and ``place`` refuses the order with that
    reason, exactly as when the book inspected the raw values itself.
    """

    __slots__ = (
        "oid", "owner", "sub", "acct", "cid", "is_buy", "price", "size", "tif", "stp",
        "reduce_only", "expiry", "prev", "next", "level", "book_acct", "bad", "raw", "id_key",
        "px_key", "exp_key",
    )

    def __init__(
        self,
        oid: Any,
        owner: Owner,
        sub: Any,
        is_buy: Any,
        price: Any,
        size: Any,
        tif: Any = 0,
        *,
        cid: Any = None,
        stp: Any = 0,
        reduce_only: Any = False,
        expiry: Any = 0,
        acct: Any = None,
    ) -> None:
        self.owner: Owner = owner
        self.prev: Order | None = None
        self.next: Order | None = None
        # the book's level and sub-account record while the order rests (sentinels otherwise),
        # so the hot path reaches them without hashing a key
        self.level: Level = NO_LEVEL
        self.book_acct: AcctOrders = NO_ACCT
        self.raw: tuple[object, ...] | None = None
        # exact builtin types only, as the book always required (an IntEnum member, a bool
        # where an int belongs or a float is BAD_TYPE); then a known tif and stp (BAD_ENUM)
        if (type(oid) is int and type(price) is int and type(size) is int
                and type(sub) is int and type(expiry) is int and type(is_buy) is bool
                and type(reduce_only) is bool and (cid is None or type(cid) is int)):
            bad = 0
        else:
            bad = RejectReason.BAD_TYPE.value
        if not bad and not (tif in TIF_VALUES and stp in STP_VALUES):
            bad = RejectReason.BAD_ENUM.value
        self.bad: int = bad
        if bad:
            self.raw = (oid, sub, is_buy, price, size, tif, cid, stp, reduce_only, expiry)
            oid = oid if type(oid) is int else 0
            sub = sub if type(sub) is int else 0
            is_buy = is_buy if type(is_buy) is bool else False
            price = price if type(price) is int else 0
            size = size if type(size) is int else 0
            tif = int(tif) if tif in TIF_VALUES else 0
            stp = int(stp) if stp in STP_VALUES else 0
            cid = cid if type(cid) is int else None
            reduce_only = reduce_only if type(reduce_only) is bool else False
            expiry = expiry if type(expiry) is int else 0
        self.oid: int = oid
        # the caller's id object, used as the book's dict key: the compiled build would box
        # ``oid`` anew, and a lookup with the very object that was stored skips a compare
        self.id_key: Any = oid
        # the same for the price and the expiry as given, the keys of the book's level and
        # expiry lookups when it takes the order (``place`` only: a modify moves the price)
        self.px_key: Any = price
        self.exp_key: Any = expiry
        self.sub: int = sub
        # an object (Any): a tuple-typed attribute is stored unboxed by the compiled build and
        # built anew for every dict it keys. ``acct``: the caller's own (owner, sub) tuple
        # (the engine's shared one), so the book's account lookup meets the key it stored
        self.acct: Any = (owner, sub) if acct is None or bad else acct
        self.cid: int | None = cid
        self.is_buy: bool = is_buy
        self.price: int = price
        self.size: int = size
        # an IntEnum member becomes its int; an int (the journal's and the engine's) is kept
        self.tif: int = tif if type(tif) is int else int(tif)
        self.stp: int = stp if type(stp) is int else int(stp)
        self.reduce_only: bool = reduce_only
        # 0 = no expiry; otherwise expired once now > expiry (unix seconds, like the contract)
        self.expiry: int = expiry

    def __repr__(self) -> str:
        side = "buy" if self.is_buy else "sell"
        return (
            f"Order(oid={self.oid}, acct={self.acct!r}, {side} {self.size}@{self.price}, "
            f"tif={self.tif}, cid={self.cid}, stp={self.stp}, ro={self.reduce_only}, "
            f"exp={self.expiry})"
        )

    def key(self) -> tuple[object, ...]:
        """The order's canonical content, used by the state hash and by tests."""
        return (
            self.oid, self.owner, self.sub, self.cid, self.is_buy, self.price, self.size,
            int(self.tif), int(self.stp), self.reduce_only, self.expiry,
        )


# what an order that rests in no book points at (typed fields need a value, not None)
NO_LEVEL: Final = Level(0, 0)
NO_ACCT: Final = AcctOrders()


class Accepted(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """A new order passed validation; ``size`` is its effective size (reduce-only may cap it)."""

    order_id: int
    size: int


class Rejected(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """A new order was refused (terminal for that order); no state changed."""

    order_id: int
    reason: RejectReason


class CommandRejected(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """A cancel or modify was refused; no state changed and the order (if any) is untouched.

    ``order_id`` is 0 when the command named an unknown client id.
    """

    order_id: int
    reason: RejectReason


class Fill(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """One match. ``match_id`` is the book's fill counter (1, 2, ...); price is the maker's."""

    match_id: int
    taker_id: int
    maker_id: int
    price: int
    size: int
    taker_remaining: int
    maker_remaining: int
    taker_is_buy: bool


class Cancelled(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """A live order ended; ``remaining`` is the open size it had (terminal for that order)."""

    order_id: int
    reason: CancelReason
    remaining: int


class Modified(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """An order's price/open size changed; ``kept_priority`` is False when it was re-queued."""

    order_id: int
    price: int
    size: int
    kept_priority: bool


Event = Union[Accepted, Rejected, CommandRejected, Fill, Cancelled, Modified]

__all__ = [
    "UINT64_MAX", "Owner", "Account", "Tif", "Stp", "RejectReason", "CancelReason", "Order",
    "Level", "AcctOrders", "NO_LEVEL", "NO_ACCT", "TIF_VALUES", "STP_VALUES",
    "Accepted", "Rejected", "CommandRejected", "Fill", "Cancelled", "Modified", "Event",
]

# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
