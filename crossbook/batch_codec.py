"""Packed batch format of docs/protocol.md section 5 (``settle(bytes batch)``).

Big-endian, tightly packed. Each item kind has one fixed size, so a batcher can fill a
calldata budget with :func:`encoded_item_size` before encoding anything.
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
# uint128 amount is written as two uint64 halves (high first), which is its big-endian form
_WITHDRAW: Final = struct.Struct(">B20sIHQQQQ" + _SIG_FMT)
_TRANSFER: Final = struct.Struct(">B20sIIHQQQQ" + _SIG_FMT)
_FUNDING: Final = struct.Struct(">BIi")
_FORCED: Final = struct.Struct(">BQ")

HEADER_SIZE: Final = _HEADER.size  # 10
FILL_SIZE: Final = _FILL.size  # 1 + 65 + 65 + 65 + 65 + 24 = 285
WITHDRAW_SIZE: Final = _WITHDRAW.size  # 124
TRANSFER_SIZE: Final = _TRANSFER.size  # 128
FUNDING_SIZE: Final = _FUNDING.size  # 9
FORCED_SIZE: Final = _FORCED.size  # 9
MAX_ITEMS: Final = 0xFFFF

_U64_MASK: Final = (1 << 64) - 1
_FLAG_BUY: Final = 1
_FLAG_REDUCE_ONLY: Final = 2

_SIZE_BY_TYPE: Final[dict[type, int]] = {
    FillItem: FILL_SIZE,
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
    """Bytes the item takes in a batch, kind byte included."""
    return _SIZE_BY_TYPE[type(item)]


def batch_size(item_count_or_items: int | Sequence[Item]) -> int:
    """Header size for an int, or the full encoded size of a sequence of items."""
    if isinstance(item_count_or_items, int):
        return HEADER_SIZE
    return HEADER_SIZE + sum(_SIZE_BY_TYPE[type(i)] for i in item_count_or_items)


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
    """``firstSeq:uint64 count:uint16 item{count}``."""
    if not 0 <= first_seq <= _U64_MASK:
        raise ProtocolRangeError(f"first_seq={first_seq} is not uint64")
    if len(items) > MAX_ITEMS:
        raise ProtocolRangeError(f"{len(items)} items exceed the uint16 count")
    parts = [_HEADER.pack(first_seq, len(items))]
    parts.extend(encode_item(item) for item in items)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# decode


def _order_from(f: tuple[object, ...]) -> Order:
    owner, sub, market, flags, price, size, nonce, expiry, max_fee = f
    assert isinstance(owner, bytes) and isinstance(flags, int)
    # flag bits above bit1 are not part of any signed field; ignored like bit masks would
    return Order(to_checksum_address(owner), sub, market, bool(flags & _FLAG_BUY),  # type: ignore[arg-type]
                 bool(flags & _FLAG_REDUCE_ONLY), price, size, nonce, expiry, max_fee)  # type: ignore[arg-type]


def _dec_fill(data: bytes, pos: int) -> FillItem:
    f = _FILL.unpack_from(data, pos)
    return FillItem(
        taker=_order_from(f[1:10]), taker_sig=f[10], maker=_order_from(f[11:20]),
        maker_sig=f[20], size=f[21], price=f[22], taker_fee_ppm=f[23], maker_fee_ppm=f[24],
    )


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


def decode_batch(data: bytes) -> tuple[int, list[Item]]:
    """Inverse of :func:`encode_batch`; raises :class:`MalformedBatch` for a truncated
    header or item (offset of that header/item), an unknown kind (offset of the kind byte)
    or trailing bytes (offset where they start)."""
    if len(data) < HEADER_SIZE:
        raise MalformedBatch(0, "truncated header")
    first_seq, count = _HEADER.unpack_from(data, 0)
    pos = HEADER_SIZE
    end = len(data)
    items: list[Item] = []
    for _ in range(count):
        if pos >= end:
            raise MalformedBatch(pos, "truncated: missing item")
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
