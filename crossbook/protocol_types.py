"""Wire types of docs/protocol.md sections 4-5: signed messages, batch items, reject codes.

msgspec Structs (frozen) so the matcher, journal and relayer can encode them cheaply. Range
checks against the Solidity widths live here, in :func:`validate`, and nowhere else.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, Union

import msgspec

from crossbook.fixedpoint import in_range

SIGNATURE_LEN: Final = 65
# filledAmount(owner, nonce) of a spent nonce: a fill brought it to its order's size (section 4)
NONCE_SPENT: Final = 2**64 - 1
ADDRESS_LEN: Final = 20


class ItemKind(IntEnum):
    """Batch item kind byte (section 5)."""

    FILL = 1
    WITHDRAW = 2
    TRANSFER = 3
    FUNDING = 4
    FORCED = 5


class RejectReason(IntEnum):
    """``ItemRejected(seq, reason)`` codes (section 5)."""

    BAD_SIGNATURE = 1
    EXPIRED = 2
    OVERFILL = 3
    PRICE_LIMIT = 4
    FEE_TOO_HIGH = 5
    REDUCE_ONLY = 6
    INSUFFICIENT_MARGIN = 7
    INVALID_ITEM = 8
    ORACLE_UNAVAILABLE = 9
    OPEN_INTEREST_CAP = 10
    REPLAYED = 11
    INSUFFICIENT_BALANCE = 12
    TRANSFER_FAILED = 13


class Order(msgspec.Struct, frozen=True):
    """EIP-712 ``Order``; ``owner`` is a 0x-prefixed hex address (any case)."""

    owner: str
    subaccount: int
    market: int
    is_buy: bool
    reduce_only: bool
    price: int
    size: int
    nonce: int
    expiry: int
    max_fee_ppm: int


class Withdrawal(msgspec.Struct, frozen=True):
    """EIP-712 ``Withdrawal`` of ``amount`` atoms of ``asset`` from a sub-account."""

    owner: str
    subaccount: int
    asset: int
    amount: int
    nonce: int
    expiry: int


class Transfer(msgspec.Struct, frozen=True):
    """EIP-712 ``Transfer`` of collateral between two sub-accounts of one owner."""

    owner: str
    from_subaccount: int
    to_subaccount: int
    asset: int
    amount: int
    nonce: int
    expiry: int


class FillItem(msgspec.Struct, frozen=True, tag=int(ItemKind.FILL), tag_field="kind"):
    """Kind 1: a match between two signed orders."""

    taker: Order
    taker_sig: bytes
    maker: Order
    maker_sig: bytes
    size: int
    price: int
    taker_fee_ppm: int
    maker_fee_ppm: int


class WithdrawItem(msgspec.Struct, frozen=True, tag=int(ItemKind.WITHDRAW), tag_field="kind"):
    """Kind 2: a signed withdrawal."""

    withdrawal: Withdrawal
    sig: bytes


class TransferItem(msgspec.Struct, frozen=True, tag=int(ItemKind.TRANSFER), tag_field="kind"):
    """Kind 3: a signed transfer."""

    transfer: Transfer
    sig: bytes


class FundingItem(msgspec.Struct, frozen=True, tag=int(ItemKind.FUNDING), tag_field="kind"):
    """Kind 4: a funding rate (ppm per interval, positive: longs pay shorts)."""

    market: int
    rate_ppm: int


class ForcedItem(msgspec.Struct, frozen=True, tag=int(ItemKind.FORCED), tag_field="kind"):
    """Kind 5: execute an on-chain escape-hatch request."""

    request_id: int


Item = Union[FillItem, WithdrawItem, TransferItem, FundingItem, ForcedItem]

# (field, bits, signed) per struct: the Solidity widths of section 4/5.
_ORDER_RANGES: Final = (
    ("subaccount", 32, False), ("market", 32, False), ("price", 64, False),
    ("size", 64, False), ("nonce", 64, False), ("expiry", 64, False),
    ("max_fee_ppm", 32, False),
)
_WITHDRAWAL_RANGES: Final = (
    ("subaccount", 32, False), ("asset", 16, False), ("amount", 128, False),
    ("nonce", 64, False), ("expiry", 64, False),
)
_TRANSFER_RANGES: Final = (
    ("from_subaccount", 32, False), ("to_subaccount", 32, False), ("asset", 16, False),
    ("amount", 128, False), ("nonce", 64, False), ("expiry", 64, False),
)
_FILL_RANGES: Final = (
    ("size", 64, False), ("price", 64, False), ("taker_fee_ppm", 32, False),
    ("maker_fee_ppm", 32, False),
)
_FUNDING_RANGES: Final = (("market", 32, False), ("rate_ppm", 32, True))
_FORCED_RANGES: Final = (("request_id", 64, False),)


class ProtocolRangeError(ValueError):
    """A field does not fit its Solidity type, so the item cannot be encoded or signed."""


def is_address(value: object) -> bool:
    """True for a ``0x`` + 40 hex digit string (checksum case is not enforced)."""
    if not isinstance(value, str) or len(value) != 42 or value[:2] not in ("0x", "0X"):
        return False
    try:
        bytes.fromhex(value[2:])
    except ValueError:
        return False
    return True


def _check_fields(obj: msgspec.Struct, ranges: tuple[tuple[str, int, bool], ...]) -> None:
    for name, bits, signed in ranges:
        value = getattr(obj, name)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not in_range(value, lo, hi):
            kind = "int" if signed else "uint"
            raise ProtocolRangeError(f"{type(obj).__name__}.{name}={value!r} is not {kind}{bits}")


def _check_owner(obj: Order | Withdrawal | Transfer) -> None:
    if not is_address(obj.owner):
        raise ProtocolRangeError(f"{type(obj).__name__}.owner={obj.owner!r} is not an address")


def _check_sig(sig: object, name: str) -> None:
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LEN:
        raise ProtocolRangeError(f"{name} must be {SIGNATURE_LEN} bytes")


def _check_bools(order: Order) -> None:
    if type(order.is_buy) is not bool or type(order.reduce_only) is not bool:
        raise ProtocolRangeError("Order.is_buy and Order.reduce_only must be bool")


def validate(obj: Order | Withdrawal | Transfer | Item) -> None:
    """Raise :class:`ProtocolRangeError` unless every field fits its Solidity type.

    Semantic rules (positive size, tick/lot grid, known market) are the contract's business
    and show up as ``RejectReason.INVALID_ITEM``, not here.
    """
    if isinstance(obj, Order):
        _check_owner(obj)
        _check_bools(obj)
        _check_fields(obj, _ORDER_RANGES)
    elif isinstance(obj, Withdrawal):
        _check_owner(obj)
        _check_fields(obj, _WITHDRAWAL_RANGES)
    elif isinstance(obj, Transfer):
        _check_owner(obj)
        _check_fields(obj, _TRANSFER_RANGES)
    elif isinstance(obj, FillItem):
        validate(obj.taker)
        validate(obj.maker)
        _check_sig(obj.taker_sig, "FillItem.taker_sig")
        _check_sig(obj.maker_sig, "FillItem.maker_sig")
        _check_fields(obj, _FILL_RANGES)
    elif isinstance(obj, WithdrawItem):
        validate(obj.withdrawal)
        _check_sig(obj.sig, "WithdrawItem.sig")
    elif isinstance(obj, TransferItem):
        validate(obj.transfer)
        _check_sig(obj.sig, "TransferItem.sig")
    elif isinstance(obj, FundingItem):
        _check_fields(obj, _FUNDING_RANGES)
    elif isinstance(obj, ForcedItem):
        _check_fields(obj, _FORCED_RANGES)
    else:
        raise TypeError(f"not a protocol type: {type(obj).__name__}")
