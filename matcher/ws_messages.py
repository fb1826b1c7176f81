"""Wire types of the matcher's websocket API (docs/api.md): requests, responses, channel messages.

Every frame is one JSON object (a text frame). Requests carry ``op`` (the tag) and a client-chosen
``id`` that the server echoes in exactly one :class:`Response`. Server-initiated frames carry
``type``.

Decoding is strict: unknown fields, missing fields, wrong JSON types (a float or a string or a bool
where an integer belongs), negative integers and integers above their Solidity width are all
refused with a structured error *before* anything reaches intake or the engine. Bounds inside
int64 (signs, uint32 fields, the dead-man timeout) are ``msgspec.Meta`` constraints checked while
decoding; msgspec decodes arbitrarily large JSON integers into Python ints and supports no bound
above int64, so the uint64 bounds are checked by :func:`check_ranges` after decoding.

Numbers are JSON integers in protocol units (docs/protocol.md section 1); no floats anywhere.
Signatures and challenges are ``0x``-prefixed hex strings.
"""

from __future__ import annotations

from functools import cache
from operator import attrgetter
from typing import Annotated, Any, Callable, Final, Literal, Union

import msgspec
import msgspec.inspect

from crossbook.protocol_types import Order, Transfer, Withdrawal
from settlement.events import ChainEvent

# ------------------------------------------------------------------------------ scalars

U64_MAX: Final = 2**64 - 1
U32_MAX: Final = 2**32 - 1

# uint64 (the upper bound is check_ranges'), uint32 (bounded while decoding)
Uint = Annotated[int, msgspec.Meta(ge=0)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=U32_MAX)]
PosInt = Annotated[int, msgspec.Meta(gt=0)]
# 0x + hex; the exact length is checked where it matters (signatures 65 bytes, challenge 32)
Hex = Annotated[str, msgspec.Meta(pattern=r"^0[xX][0-9a-fA-F]*$", max_length=1026)]
Address = Annotated[str, msgspec.Meta(pattern=r"^0[xX][0-9a-fA-F]{40}$")]
Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

TifName = Literal["GTC", "IOC", "FOK", "POST_ONLY"]
StpName = Literal["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]

_MAX_TIMEOUT_MS: Final = 24 * 3600 * 1000
# items per batch_place / batch_cancel: 20 signed orders with every field at its widest are
# ~11 kB, within max_message_bytes
MAX_BATCH: Final = 20


class WireOrder(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The EIP-712 ``Order`` exactly as signed (docs/protocol.md section 4)."""

    owner: Address
    subaccount: U32
    market: U32
    is_buy: bool
    reduce_only: bool
    price: Uint
    size: Uint
    nonce: Uint
    expiry: Uint
    max_fee_ppm: U32

    def to_order(self) -> Order:
        """The protocol value intake verifies."""
        return Order(self.owner, self.subaccount, self.market, self.is_buy, self.reduce_only,
                     self.price, self.size, self.nonce, self.expiry, self.max_fee_ppm)


class WireWithdrawal(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The EIP-712 ``Withdrawal`` as signed."""

    owner: Address
    subaccount: U32
    asset: Uint
    amount: Uint
    nonce: Uint
    expiry: Uint

    def to_withdrawal(self) -> Withdrawal:
        """The protocol value intake verifies."""
        return Withdrawal(self.owner, self.subaccount, self.asset, self.amount, self.nonce,
                          self.expiry)


class WireTransfer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The EIP-712 ``Transfer`` as signed."""

    owner: Address
    from_subaccount: U32
    to_subaccount: U32
    asset: Uint
    amount: Uint
    nonce: Uint
    expiry: Uint

    def to_transfer(self) -> Transfer:
        """The protocol value intake verifies."""
        return Transfer(self.owner, self.from_subaccount, self.to_subaccount, self.asset,
                        self.amount, self.nonce, self.expiry)


# ------------------------------------------------------------------------------ requests


class Login(msgspec.Struct, tag="login", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Sign in with the connection's current challenge (EIP-712 ``Login``, see docs/api.md)."""

    id: Uint
    owner: Address
    signer: Address
    challenge: Hex
    expiry: Uint
    signature: Hex
    cancel_on_disconnect: bool = False


class GetChallenge(msgspec.Struct, tag="challenge", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Ask for a fresh login challenge (each one is single use)."""

    id: Uint


class PlaceItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A signed order with its placement options: one ``place``, or one item of ``batch_place``."""

    order: WireOrder
    signature: Hex
    tif: TifName = "GTC"
    client_id: Uint | None = None
    stp: StpName = "EXPIRE_TAKER"


class Place(PlaceItem, tag="place", tag_field="op", kw_only=True, frozen=True):
    """Place a signed order."""

    id: Uint


class CancelItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which order to cancel: by exchange ``order_id``, or by ``(sub, market, client_id)``."""

    order_id: Uint | None = None
    sub: U32 = 0
    market: U32 = 0
    client_id: Uint | None = None


class Cancel(CancelItem, tag="cancel", tag_field="op", kw_only=True, frozen=True):
    """Cancel one order."""

    id: Uint


class BatchPlace(msgspec.Struct, tag="batch_place", tag_field="op", forbid_unknown_fields=True,
                 frozen=True):
    """Place up to ``MAX_BATCH`` signed orders, run back to back in the engine (nothing else is
    sequenced between them); each gets its own result."""

    id: Uint
    orders: Annotated[list[PlaceItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchModify(msgspec.Struct, tag="batch_modify", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Modify up to ``MAX_BATCH`` orders back to back (a whole re-quote in one frame); each
    gets its own result."""

    id: Uint
    modifies: Annotated[list[ModifyItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchCancel(msgspec.Struct, tag="batch_cancel", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Cancel up to ``MAX_BATCH`` orders back to back; each gets its own result."""

    id: Uint
    cancels: Annotated[list[CancelItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class CancelAllReq(msgspec.Struct, tag="cancel_all", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Cancel every live order of one sub-account, or with ``all_subs`` of every sub-account of
    the logged-in owner (optionally in one market only)."""

    id: Uint
    sub: U32 = 0
    market: U32 | None = None
    all_subs: bool = False


class ModifyItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Reduce an order's open size (``size``), or cancel-replace it into a new signed order
    (``order`` + ``signature``: the old order is reported CANCELLED and the replacement gets
    a new exchange order id, returned in the response; the client id carries over)."""

    order_id: Uint
    size: Uint | None = None
    order: WireOrder | None = None
    signature: Hex | None = None


class Modify(ModifyItem, tag="modify", tag_field="op", kw_only=True, frozen=True):
    """Modify one order."""

    id: Uint


class WithdrawReq(msgspec.Struct, tag="withdraw", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """A withdrawal signed by the owner."""

    id: Uint
    withdrawal: WireWithdrawal
    signature: Hex


class TransferReq(msgspec.Struct, tag="transfer", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """A transfer between two sub-accounts, signed by the owner."""

    id: Uint
    transfer: WireTransfer
    signature: Hex


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Subscribe to channels (``book.<market>``, ``trades.<market>``, ``markets``, ``prices``,
    ``orders``, ``fills``, ``positions``, ``health``). ``fills_after``: the settlement seq of
    the last fill the client saw; the ``fills`` frames sent since are replayed (needs ``fills``
    among ``channels``)."""

    id: Uint
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=64)]
    fills_after: Uint | None = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Stop channels."""

    id: Uint
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=64)]


class DeadMan(msgspec.Struct, tag="dead_man", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Arm/refresh (``timeout_ms`` > 0) or disarm (0) the dead-man's switch."""

    id: Uint
    timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=_MAX_TIMEOUT_MS)]


class Ping(msgspec.Struct, tag="ping", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """App-level ping; answered by a response carrying the server time."""

    id: Uint


class Stream(msgspec.Struct, tag="stream", tag_field="op", forbid_unknown_fields=True,
                  frozen=True):
    """Relayer: every sequenced item from ``from_seq`` on, in order, then live."""

    id: Uint
    from_seq: PosInt
    token: str | None = None


class ChainReq(msgspec.Struct, tag="chain", tag_field="op", forbid_unknown_fields=True,
               frozen=True):
    """Operator (watcher): one confirmed clearinghouse event, in chain order. ``event`` is a
    :mod:`settlement.events` value in its JSON form (``type`` tag + fields); ``token`` must
    equal the server's ``operator_token``."""

    id: Uint
    token: str
    event: ChainEvent


class FundingReq(msgspec.Struct, tag="funding", tag_field="op", forbid_unknown_fields=True,
                 frozen=True):
    """Operator (``crossbook funding``): sequence a funding update of ``market`` with
    ``rate_ppm`` (signed, per interval; positive: longs pay shorts). ``token`` must equal the
    server's ``operator_token``."""

    id: Uint
    token: str
    market: int
    rate_ppm: int


class ChainCursorReq(msgspec.Struct, tag="chain_cursor", tag_field="op",
                     forbid_unknown_fields=True, frozen=True):
    """The engine's last applied chain position (where a watcher resumes)."""

    id: Uint


class HaltReq(msgspec.Struct, tag="halt", tag_field="op", forbid_unknown_fields=True,
              frozen=True):
    """Operator (``crossbook halt``): halt trading with ``reason`` (new and replacement orders
    are refused ``HALTED``; cancels go on; ``cancel_orders`` also cancels every resting order),
    or resume it with ``reason`` empty. ``token`` must equal the server's ``operator_token``."""

    id: Uint
    token: str
    reason: str
    cancel_orders: bool = False


class StatusReq(msgspec.Struct, tag="status", tag_field="op", forbid_unknown_fields=True,
                frozen=True):
    """Sequencing and settlement-lag figures (invariant 6)."""

    id: Uint


Request = Union[Login, GetChallenge, Place, Cancel, Modify, BatchPlace, BatchCancel, BatchModify,
                CancelAllReq, WithdrawReq, TransferReq, Subscribe, Unsubscribe, DeadMan, Ping, Stream, ChainReq,
                ChainCursorReq, StatusReq, FundingReq, HaltReq]

# Withdrawal/Transfer amounts are checked by crossbook.protocol_types.validate as uint128
_WIDE_FIELDS: Final = frozenset({"amount"})


class RangeError(ValueError):
    """A decoded integer does not fit its field."""


@cache
def _int_fields(cls: type[msgspec.Struct]) -> tuple[tuple[str, ...], tuple[tuple[str, type], ...]]:
    """(integer fields with no upper bound declared, nested (field, Struct type)) of ``cls``."""
    ints: list[str] = []
    nested: list[tuple[str, type]] = []
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        types = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        for t in types:
            if isinstance(t, msgspec.inspect.IntType) and t.le is None and t.lt is None:
                if f.name not in _WIDE_FIELDS:
                    ints.append(f.name)
            elif isinstance(t, msgspec.inspect.StructType):
                nested.append((f.name, t.cls))
    return tuple(ints), tuple(nested)


def _paths(cls: type) -> list[str]:
    """Dotted paths of every integer field of ``cls`` (nested ones too) checked as uint64."""
    ints, nested = _int_fields(cls)
    return [*ints, *(f"{name}.{p}" for name, sub in nested for p in _paths(sub))]


@cache
def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """One C call that reads every field of ``cls`` check_ranges bounds."""
    paths = _paths(cls)
    if len(paths) == 1:
        one = attrgetter(paths[0])
        return lambda obj: (one(obj),)
    return attrgetter(*paths)


def _check(obj: msgspec.Struct, path: str) -> None:
    """Field by field: raise :class:`RangeError` naming the first field above uint64."""
    ints, nested = _int_fields(type(obj))
    for name in ints:
        v = getattr(obj, name)
        if v is not None and v > U64_MAX:
            raise RangeError(f"`{path}.{name}` = {v} exceeds uint64")
    for name, _ in nested:
        v = getattr(obj, name)
        if v is not None:
            _check(v, f"{path}.{name}")


# the list field of each batch op
_BATCH_ITEMS: Final[dict[type, str]] = {BatchPlace: "orders", BatchCancel: "cancels",
                                        BatchModify: "modifies"}


def check_ranges(req: msgspec.Struct) -> None:
    """Raise :class:`RangeError` when an integer field exceeds uint64 (narrower bounds are
    decoding constraints)."""
    t = type(req)
    if t is ChainReq:
        # chain events carry uint256 values (funding indices, amounts) the contract already
        # accepted; only the operator can send them
        return
    if isinstance(req, FundingReq):
        # a signed rate: the engine checks the int32 range (an unsigned check would refuse
        # every negative rate); the market is a uint32 like everywhere else
        if not 0 <= req.market <= U32_MAX:
            raise RangeError(f"`$.market` = {req.market} is not a uint32")
        return
    name = _BATCH_ITEMS.get(t)
    if name is not None:
        # the items are in a list, which the field walk does not enter
        _check_struct(req, "$")
        for i, item in enumerate(getattr(req, name)):
            _check_struct(item, f"$.{name}[{i}]")
        return
    _check_struct(req, "$")


def _check_struct(obj: msgspec.Struct, path: str) -> None:
    """:func:`check_ranges` for one struct and the structs nested in it."""
    try:
        values = _getter(type(obj))(obj)
    except AttributeError:  # an optional nested struct is absent: field by field
        _check(obj, path)
        return
    for v in values:
        if v is not None and v > U64_MAX:
            break
    else:
        return
    _check(obj, path)  # raises, naming the field


request_decoder: Final = msgspec.json.Decoder(Request)


# ------------------------------------------------------------------------------ server -> client


class Response(msgspec.Struct, tag="response", tag_field="type", omit_defaults=True):
    """Exactly one per request, echoing its ``id`` (None only when the request was not even
    parseable JSON with an integer id). ``ok`` true carries ``result``; false carries a
    machine-readable ``code`` and a human ``message``."""

    id: int | None
    ok: bool
    result: Any = None
    code: str | None = None
    message: str | None = None


class Hello(msgspec.Struct, tag="hello", tag_field="type"):
    """First frame on every connection: protocol facts and the first login challenge."""

    challenge: str
    challenge_expires_at: int
    chain_id: int
    verifying_contract: str
    limits: dict[str, int]


class Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="type"):
    """Periodic liveness frame; ``last_seq`` is the newest sequenced item."""

    ts_ms: int
    last_seq: int


class BookMsg(msgspec.Struct, tag="book", tag_field="type"):
    """L2 book (top ``depth`` levels): ``kind`` is ``snapshot`` (full levels) or ``delta``
    (changed levels, size 0 = removed). A delta's ``prev_seq`` equals the previous message's
    ``seq`` on this channel; otherwise the client missed something and must resubscribe."""

    channel: str
    market: int
    kind: str
    prev_seq: int
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class TradeMsg(msgspec.Struct, tag="trade", tag_field="type"):
    """A public trade; ``seq`` is the sequence number of the fill item that settles it."""

    channel: str
    market: int
    seq: int
    price: int
    size: int
    taker_side: str
    ts_ms: int


class MarketInfo(msgspec.Struct):
    """Static listing plus top of book and oracle price."""

    market: int
    symbol: str
    tick_size: int
    lot_size: int
    best_bid: int | None
    best_ask: int | None
    oracle_price: int | None


class MarketsMsg(msgspec.Struct, tag="markets", tag_field="type"):
    """``markets`` channel: every market on subscribe, then the ones whose top of book or
    oracle price changed."""

    channel: str
    markets: list[MarketInfo]


class HaltMsg(msgspec.Struct, tag="halt", tag_field="type"):
    """``markets`` channel: trading halted (``halted``: the reason) or resumed (null); sent when
    it changes, and after the subscribe snapshot while halted."""

    channel: str
    halted: str | None


class PricesMsg(msgspec.Struct, tag="prices", tag_field="type"):
    """``prices`` channel: the matcher's oracle prices (1e8) by asset id and market id, and the
    ids that have none (the adapter refuses it: such a market is in reduce-only mode)."""

    channel: str
    assets: dict[int, int]
    markets: dict[int, int]
    unavailable_assets: list[int]
    unavailable_markets: list[int]


class OrderMsg(msgspec.Struct, tag="order", tag_field="type"):
    """``orders`` channel: an order of the logged-in owner changed."""

    channel: str
    order_id: int
    sub: int
    market: int
    client_id: int | None
    status: str
    price: int
    filled: int
    remaining: int
    reason: str | None


class FillMsg(msgspec.Struct, tag="fill", tag_field="type"):
    """``fills`` channel: one side of a trade, from the logged-in owner's point of view."""

    channel: str
    seq: int
    market: int
    order_id: int
    sub: int
    side: str
    liquidity: str
    price: int
    size: int
    fee: int
    ts_ms: int


class BustMsg(msgspec.Struct, tag="bust", tag_field="type"):
    """``fills`` channel: a fill the chain rejected and the matcher reversed."""

    channel: str
    seq: int
    sub: int
    reason: int


class LiquidatedMsg(msgspec.Struct, tag="liquidated", tag_field="type"):
    """``fills`` channel: a liquidation-path event the chain applied to one of the owner's
    sub-accounts, as target (``role`` "target") or as liquidator / ADL counterparty
    (``role`` "liquidator" / "counterparty"). See docs/api.md."""

    channel: str
    kind: str
    role: str
    sub: int
    counterparty: str | None
    counterparty_sub: int | None
    market: int | None
    asset: int | None
    size_delta: int
    amount: int
    price: int
    penalty: int
    insurance_share: int
    covered: int
    unbacked: int
    cancelled: list[int]
    block: int
    log_index: int


class PositionEntry(msgspec.Struct):
    """One perp position."""

    market: int
    size: int
    open_notional: int
    funding_snapshot: int


class PositionMsg(msgspec.Struct, tag="position", tag_field="type"):
    """``positions`` channel: projected balances and positions of one sub-account."""

    channel: str
    sub: int
    quote: int
    collateral: dict[int, int]
    positions: list[PositionEntry]


class HealthMsg(msgspec.Struct, tag="health", tag_field="type"):
    """``health`` channel: margin health of one sub-account at the matcher's oracle prices
    (fields null when a needed price is missing)."""

    channel: str
    sub: int
    equity: int | None
    initial_health: int | None
    maintenance_health: int | None
    liquidatable: bool | None


class ItemMsg(msgspec.Struct, tag="item", tag_field="type"):
    """Relayer stream: one sequenced item; ``data`` is its docs/protocol.md section-5 encoding
    (``kind`` byte + body, hex), exactly the bytes that go into a batch."""

    seq: int
    kind: int
    data: str
    ts_ms: int


encoder: Final = msgspec.json.Encoder()

__all__ = [
    "Address", "BatchCancel", "BatchModify", "BatchPlace", "ModifyItem", "BookMsg", "BustMsg", "Cancel", "CancelAllReq", "CancelItem",
    "MAX_BATCH", "PlaceItem", "ChainCursorReq", "ChainReq",
    "StatusReq", "DeadMan", "FillMsg",
    "GetChallenge", "HealthMsg", "Heartbeat", "Hello", "ItemMsg", "LiquidatedMsg", "Login", "MarketInfo",
    "MarketsMsg", "Modify", "OrderMsg", "Ping", "Place", "PositionEntry", "PositionMsg",
    "PricesMsg", "RangeError", "Request", "Response", "Stream", "Subscribe", "TradeMsg",
    "TransferReq", "Unsubscribe", "WireOrder", "WireTransfer", "WireWithdrawal", "WithdrawReq",
    "check_ranges", "encoder", "request_decoder", "U32_MAX", "U64_MAX", "FundingReq", "HaltReq", "HaltMsg",
]


class DeadManFired(msgspec.Struct, tag="dead_man", tag_field="type"):
    """The dead-man's switch ran out: the session's live orders are being cancelled (their
    ``order`` updates follow with reason ``DEAD_MAN``)."""

    cancelling: list[int]


class StreamGap(msgspec.Struct, tag="stream_gap", tag_field="type"):
    """Relayer stream: the next sequence number was settled and pruned before it could be
    sent; the server closes the stream (resubscribe from the chain's ``nextSeq``)."""

    expected: int
    settled_seq: int
