"""Packed batch format of docs/protocol.md section 5 (``settle(bytes batch)``).

Big-endian, tightly packed. :func:`encode_item` is the self-contained form of one item (kind 1
for a fill, both signed orders inline): the matcher streams items that way. :func:`encode_batch`
writes what the relayer submits: an order table holding each distinct signed order of the batch
once, and every fill as a FILL_REF (kind 6) pointing into it, so the contract hashes and recovers
a resting order that fills many times only once. :func:`encoded_item_size` is an upper bound of
what an item adds to a batch, so a batcher can fill a calldata budget before encoding anything.
"""

from __future__ import annotations

import struct
from typing import Callable, Final, Sequence

from crossbook.eip712 import address_bytes, to_checksum_address
from crossbook.protocol_types import (
    SIGNATURE_LEN,
    FillItem,
    ForcedItem,
    FundingItem,
    Item,
    ItemKind,
    Order,
    ProtocolRangeError,
    Transfer,
    TransferItem,
    Withdrawal,
    WithdrawItem,
)

# order := owner subaccount market flags price size nonce expiry maxFeePpm
_ORDER_FMT: Final = "20sIIBQQQQI"
_SIG_FMT: Final = f"{SIGNATURE_LEN}s"
_HEADER: Final = struct.Struct(">QH")
_FILL: Final = struct.Struct(
    ">B" + _ORDER_FMT + _SIG_FMT + _ORDER_FMT + _SIG_FMT + "QQII"
)
# order table := 0x00 orderCount:uint16 (order sig){orderCount}; FILL_REF := kind takerIdx makerIdx ...
_TABLE_HEADER: Final = struct.Struct(">BH")
_SIGNED_ORDER: Final = struct.Struct(">" + _ORDER_FMT + _SIG_FMT)
_FILL_REF: Final = struct.Struct(">BHHQQII")
_FILL_FIELDS: Final = struct.Struct(">QQII")
KIND_FILL_REF: Final = 6  # a batch-encoding form of ItemKind.FILL, not an item kind of its own
# uint128 amount is written as two uint64 halves (high first), which is its big-endian form
_WITHDRAW: Final = struct.Struct(">B20sIHQQQQ" + _SIG_FMT)
_TRANSFER: Final = struct.Struct(">B20sIIHQQQQ" + _SIG_FMT)
_FUNDING: Final = struct.Struct(">BIi")
_FORCED: Final = struct.Struct(">BQ")

HEADER_SIZE: Final = _HEADER.size  # 10
TABLE_HEADER_SIZE: Final = _TABLE_HEADER.size  # 3
SIGNED_ORDER_SIZE: Final = _SIGNED_ORDER.size  # 130
FILL_SIZE: Final = _FILL.size  # 1 + 65 + 65 + 65 + 65 + 24 = 285 (inline, encode_item)
FILL_REF_SIZE: Final = _FILL_REF.size  # 1 + 2 + 2 + 24 = 29
# what a fill adds to a batch at most: its FILL_REF, both orders new to the table and, for the
# batch's first fill, the table header
FILL_BATCH_SIZE: Final = TABLE_HEADER_SIZE + FILL_REF_SIZE + 2 * SIGNED_ORDER_SIZE  # 292
WITHDRAW_SIZE: Final = _WITHDRAW.size  # 124
TRANSFER_SIZE: Final = _TRANSFER.size  # 128
FUNDING_SIZE: Final = _FUNDING.size  # 9
FORCED_SIZE: Final = _FORCED.size  # 9
MAX_ITEMS: Final = 0xFFFF

_U64_MASK: Final = (1 << 64) - 1
_FLAG_BUY: Final = 1
_FLAG_REDUCE_ONLY: Final = 2

_SIZE_BY_TYPE: Final[dict[type, int]] = {
    FillItem: FILL_BATCH_SIZE,
    WithdrawItem: WITHDRAW_SIZE,
    TransferItem: TRANSFER_SIZE,
    FundingItem: FUNDING_SIZE,
    ForcedItem: FORCED_SIZE,
}


class MalformedBatch(ValueError):
    """Mirrors the contract's ``MalformedBatch(offset)`` revert."""

    def __init__(self, offset: int, why: str) -> None:
        super().__init__(f"malformed batch at offset {offset}: {why}")
        self.offset = offset


def encoded_item_size(item: Item) -> int:
    """Upper bound of the bytes the item adds to a batch, kind byte included (exact for every
    kind but a fill, whose orders may already be in the batch's order table)."""
    return _SIZE_BY_TYPE[type(item)]


def batch_size(item_count_or_items: int | Sequence[Item]) -> int:
    """Header size for an int, or the exact encoded size of a sequence of items."""
    if isinstance(item_count_or_items, int):
        return HEADER_SIZE
    items = item_count_or_items
    fills = [i for i in items if isinstance(i, FillItem)]
    size = HEADER_SIZE + sum(_SIZE_BY_TYPE[type(i)] for i in items if not isinstance(i, FillItem))
    if not fills:
        return size
    orders = {key for f in fills for key in fill_order_keys(f)}
    return size + TABLE_HEADER_SIZE + SIGNED_ORDER_SIZE * len(orders) + FILL_REF_SIZE * len(fills)


# ---------------------------------------------------------------------------------------------
# encode


def _sig(sig: bytes) -> bytes:
    # struct's "65s" would silently pad or cut; a wrong length must fail loudly
    if len(sig) != SIGNATURE_LEN:
        raise ProtocolRangeError(f"signature must be {SIGNATURE_LEN} bytes, got {len(sig)}")
    return sig


def _order_fields(o: Order) -> tuple[object, ...]:
    flags = (_FLAG_BUY if o.is_buy else 0) | (_FLAG_REDUCE_ONLY if o.reduce_only else 0)
    return (address_bytes(o.owner), o.subaccount, o.market, flags, o.price, o.size, o.nonce,
            o.expiry, o.max_fee_ppm)


def _uint128(amount: int) -> tuple[int, int]:
    if not 0 <= amount < 1 << 128:
        raise ProtocolRangeError(f"amount={amount} is not uint128")
    return amount >> 64, amount & _U64_MASK


def fill_order_keys(it: FillItem) -> tuple[bytes, bytes]:
    """The taker's and the maker's order-table entries (packed order + signature): the table
    holds each distinct entry once."""
    try:
        return (_SIGNED_ORDER.pack(*_order_fields(it.taker), _sig(it.taker_sig)),
                _SIGNED_ORDER.pack(*_order_fields(it.maker), _sig(it.maker_sig)))
    except struct.error as exc:
        raise ProtocolRangeError(f"FillItem: {exc}") from None


def _enc_fill(it: FillItem) -> bytes:
    return _FILL.pack(
        ItemKind.FILL, *_order_fields(it.taker), _sig(it.taker_sig),
        *_order_fields(it.maker), _sig(it.maker_sig),
        it.size, it.price, it.taker_fee_ppm, it.maker_fee_ppm,
    )


def _enc_withdraw(it: WithdrawItem) -> bytes:
    w = it.withdrawal
    hi, lo = _uint128(w.amount)
    return _WITHDRAW.pack(ItemKind.WITHDRAW, address_bytes(w.owner), w.subaccount, w.asset,
                          hi, lo, w.nonce, w.expiry, _sig(it.sig))


def _enc_transfer(it: TransferItem) -> bytes:
    t = it.transfer
    hi, lo = _uint128(t.amount)
    return _TRANSFER.pack(ItemKind.TRANSFER, address_bytes(t.owner), t.from_subaccount,
                          t.to_subaccount, t.asset, hi, lo, t.nonce, t.expiry, _sig(it.sig))


def _enc_funding(it: FundingItem) -> bytes:
    return _FUNDING.pack(ItemKind.FUNDING, it.market, it.rate_ppm)


def _enc_forced(it: ForcedItem) -> bytes:
    return _FORCED.pack(ItemKind.FORCED, it.request_id)


_ENCODERS: Final[dict[type, Callable[[object], bytes]]] = {
    FillItem: _enc_fill,  # type: ignore[dict-item]
    WithdrawItem: _enc_withdraw,  # type: ignore[dict-item]
    TransferItem: _enc_transfer,  # type: ignore[dict-item]
    FundingItem: _enc_funding,  # type: ignore[dict-item]
    ForcedItem: _enc_forced,  # type: ignore[dict-item]
}


def encode_item(item: Item) -> bytes:
    """One item, kind byte first; raises :class:`ProtocolRangeError` on out-of-range fields."""
    try:
        return _ENCODERS[type(item)](item)
    except struct.error as exc:
        raise ProtocolRangeError(f"{type(item).__name__}: {exc}") from None
    except KeyError:
        raise TypeError(f"not a batch item: {type(item).__name__}") from None


def encode_batch(first_seq: int, items: Sequence[Item]) -> bytes:
    """``firstSeq:uint64 count:uint16 [orders] item{count}``: with any fill, an order table of
    the distinct signed orders (first use first) and every fill as a FILL_REF into it."""
    if not 0 <= first_seq <= _U64_MASK:
        raise ProtocolRangeError(f"first_seq={first_seq} is not uint64")
    if len(items) > MAX_ITEMS:
        raise ProtocolRangeError(f"{len(items)} items exceed the uint16 count")
    table: dict[bytes, int] = {}
    body: list[bytes] = []
    for item in items:
        if not isinstance(item, FillItem):
            body.append(encode_item(item))
            continue
        t, m = (table.setdefault(key, len(table)) for key in fill_order_keys(item))
        try:
            body.append(_FILL_REF.pack(KIND_FILL_REF, t, m, item.size, item.price,
                                       item.taker_fee_ppm, item.maker_fee_ppm))
        except struct.error as exc:
            raise ProtocolRangeError(f"FillItem: {exc}") from None
    if len(table) > MAX_ITEMS:
        raise ProtocolRangeError(f"{len(table)} distinct orders exceed the uint16 table size")
    parts = [_HEADER.pack(first_seq, len(items))]
    if table:
        parts.append(_TABLE_HEADER.pack(0, len(table)))
        parts.extend(table)  # dicts keep insertion order: entry i is index i
    parts.extend(body)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# decode


def _order_from(f: tuple[object, ...]) -> Order:
    owner, sub, market, flags, price, size, nonce, expiry, max_fee = f
    assert isinstance(owner, bytes) and isinstance(flags, int)
    # flag bits above bit1 are not part of any signed field; ignored like bit masks would
    return Order(to_checksum_address(owner), sub, market, bool(flags & _FLAG_BUY),  # type: ignore[arg-type]
                 bool(flags & _FLAG_REDUCE_ONLY), price, size, nonce, expiry, max_fee)  # type: ignore[arg-type]


def _dec_fill_fields(taker: tuple[object, ...], maker: tuple[object, ...], data: bytes,
                     pos: int) -> FillItem:
    size, price, taker_fee, maker_fee = _FILL_FIELDS.unpack_from(data, pos)
    return FillItem(
        taker=_order_from(taker[:9]), taker_sig=taker[9], maker=_order_from(maker[:9]),  # type: ignore[arg-type]
        maker_sig=maker[9], size=size, price=price, taker_fee_ppm=taker_fee,  # type: ignore[arg-type]
        maker_fee_ppm=maker_fee,
    )


def _dec_fill(data: bytes, pos: int) -> FillItem:
    taker = _SIGNED_ORDER.unpack_from(data, pos + 1)
    maker = _SIGNED_ORDER.unpack_from(data, pos + 1 + SIGNED_ORDER_SIZE)
    return _dec_fill_fields(taker, maker, data, pos + 1 + 2 * SIGNED_ORDER_SIZE)


def _dec_withdraw(data: bytes, pos: int) -> WithdrawItem:
    _, owner, sub, asset, hi, lo, nonce, expiry, sig = _WITHDRAW.unpack_from(data, pos)
    return WithdrawItem(Withdrawal(to_checksum_address(owner), sub, asset, (hi << 64) | lo,
                                   nonce, expiry), sig)


def _dec_transfer(data: bytes, pos: int) -> TransferItem:
    _, owner, frm, to, asset, hi, lo, nonce, expiry, sig = _TRANSFER.unpack_from(data, pos)
    return TransferItem(Transfer(to_checksum_address(owner), frm, to, asset, (hi << 64) | lo,
                                 nonce, expiry), sig)


def _dec_funding(data: bytes, pos: int) -> FundingItem:
    _, market, rate = _FUNDING.unpack_from(data, pos)
    return FundingItem(market, rate)


def _dec_forced(data: bytes, pos: int) -> ForcedItem:
    _, request_id = _FORCED.unpack_from(data, pos)
    return ForcedItem(request_id)


_DECODERS: Final[dict[int, tuple[int, Callable[[bytes, int], Item]]]] = {
    ItemKind.FILL: (FILL_SIZE, _dec_fill),
    ItemKind.WITHDRAW: (WITHDRAW_SIZE, _dec_withdraw),
    ItemKind.TRANSFER: (TRANSFER_SIZE, _dec_transfer),
    ItemKind.FUNDING: (FUNDING_SIZE, _dec_funding),
    ItemKind.FORCED: (FORCED_SIZE, _dec_forced),
}


def _dec_table(data: bytes) -> tuple[list[tuple[object, ...]], int]:
    """The order table after the header, if any: (entries, offset of the first item)."""
    pos, end = HEADER_SIZE, len(data)
    if pos >= end or data[pos] != 0:
        return [], pos
    if pos + TABLE_HEADER_SIZE > end:
        raise MalformedBatch(HEADER_SIZE, "truncated order table")
    _, n = _TABLE_HEADER.unpack_from(data, pos)
    pos += TABLE_HEADER_SIZE
    if pos + n * SIGNED_ORDER_SIZE > end:
        raise MalformedBatch(HEADER_SIZE, "truncated order table")
    entries = [_SIGNED_ORDER.unpack_from(data, pos + i * SIGNED_ORDER_SIZE) for i in range(n)]
    return entries, pos + n * SIGNED_ORDER_SIZE


def decode_batch(data: bytes) -> tuple[int, list[Item]]:
    """Inverse of :func:`encode_batch` (also reads inline kind-1 fills, the :func:`encode_item`
    form); FILL_REF items come back as :class:`FillItem`. Raises :class:`MalformedBatch` for a
    truncated header (offset 0) or order table (offset 10), a truncated or unknown-kind item or a
    FILL_REF index outside the table (offset of the kind byte), or trailing bytes (offset where
    they start)."""
    if len(data) < HEADER_SIZE:
        raise MalformedBatch(0, "truncated header")
    first_seq, count = _HEADER.unpack_from(data, 0)
    table, pos = _dec_table(data)
    end = len(data)
    items: list[Item] = []
    for _ in range(count):
        if pos >= end:
            raise MalformedBatch(pos, "truncated: missing item")
        if data[pos] == KIND_FILL_REF:
            if pos + FILL_REF_SIZE > end:
                raise MalformedBatch(pos, "truncated item")
            _, t, m = _FILL_REF.unpack_from(data, pos)[:3]
            if t >= len(table) or m >= len(table):
                raise MalformedBatch(pos, f"order index {max(t, m)} outside a table of {len(table)}")
            items.append(_dec_fill_fields(table[t], table[m], data, pos + 5))
            pos += FILL_REF_SIZE
            continue
        entry = _DECODERS.get(data[pos])
        if entry is None:
            raise MalformedBatch(pos, f"unknown item kind {data[pos]}")
        size, decode = entry
        if pos + size > end:
            raise MalformedBatch(pos, "truncated item")
        items.append(decode(data, pos))
        pos += size
    if pos != end:
        raise MalformedBatch(pos, f"{end - pos} trailing bytes")
    return first_seq, items
