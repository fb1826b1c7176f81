"""Integer fixed-point units and rounding helpers of docs/protocol.md section 1.

Every quantity on a state path is a Python ``int``; the helpers below give the exact
rounding the Solidity clearinghouse uses, so Python and the contract agree to the atom.
"""

from __future__ import annotations

from typing import Final

PPM: Final = 1_000_000
PRICE_SCALE: Final = 10**8
SIZE_SCALE: Final = 10**8
QUOTE_DECIMALS: Final = 6
QUOTE_SCALE: Final = 10**QUOTE_DECIMALS
FUNDING_SCALE: Final = PRICE_SCALE
# size (1e8) * price (1e8) = 1e16 per quote x base; quote atoms are 1e6.
NOTIONAL_DIV: Final = SIZE_SCALE * PRICE_SCALE // QUOTE_SCALE

QUOTE_ASSET: Final = 0
MAX_COLLATERAL_ASSETS: Final = 16
MAX_MARKETS: Final = 32
MAX_TIERS: Final = 4

UINT8_MAX: Final = 2**8 - 1
UINT16_MAX: Final = 2**16 - 1
UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
UINT128_MAX: Final = 2**128 - 1
UINT256_MAX: Final = 2**256 - 1
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
INT96_MIN: Final = -(2**95)
INT96_MAX: Final = 2**95 - 1
INT128_MIN: Final = -(2**127)
INT128_MAX: Final = 2**127 - 1
INT256_MIN: Final = -(2**255)
INT256_MAX: Final = 2**255 - 1


def floor_div(a: int, b: int) -> int:
    """Divide rounding toward minus infinity; ``b`` must be positive."""
    return a // b


def ceil_div(a: int, b: int) -> int:
    """Divide rounding toward plus infinity; ``b`` must be positive."""
    return -((-a) // b)


def trunc_div(a: int, b: int) -> int:
    """Divide rounding toward zero, like Solidity's signed ``/``; ``b`` may be negative."""
    q = abs(a) // abs(b)
    # the quotient is negative exactly when the operands' signs differ
    return -q if (a < 0) != (b < 0) else q


def uint_max(bits: int) -> int:
    """Largest value of a Solidity ``uint<bits>``."""
    return (1 << bits) - 1


def int_min(bits: int) -> int:
    """Smallest value of a Solidity ``int<bits>``."""
    return -(1 << (bits - 1))


def int_max(bits: int) -> int:
    """Largest value of a Solidity ``int<bits>``."""
    return (1 << (bits - 1)) - 1


def in_range(value: int, lo: int, hi: int) -> bool:
    """True when ``lo <= value <= hi`` and ``value`` is a real int (bool is refused)."""
    return type(value) is int and lo <= value <= hi


def check_range(value: int, lo: int, hi: int, name: str) -> int:
    """Return ``value`` if it lies in ``[lo, hi]``, else raise ``ValueError`` naming it."""
    if not in_range(value, lo, hi):
        raise ValueError(f"{name}={value!r} outside [{lo}, {hi}]")
    return value


def check_uint(value: int, bits: int, name: str) -> int:
    """Return ``value`` if it fits a Solidity ``uint<bits>``, else raise ``ValueError``."""
    return check_range(value, 0, (1 << bits) - 1, name)


def check_int(value: int, bits: int, name: str) -> int:
    """Return ``value`` if it fits a Solidity ``int<bits>``, else raise ``ValueError``."""
    return check_range(value, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, name)
