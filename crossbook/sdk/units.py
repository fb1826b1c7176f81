"""Human decimals <-> protocol integers (docs/protocol.md section 1), without floats.

Inputs are ``str``, ``int`` or ``Decimal``; floats are refused because a binary float cannot
represent most decimal prices exactly and would silently shift a limit price by a tick.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Final, Literal, Union

PRICE_SCALE: Final = 10**8
SIZE_SCALE: Final = 10**8
QUOTE_SCALE: Final = 10**6
PPM: Final = 1_000_000

Human = Union[str, int, Decimal]
Rounding = Literal["exact", "down", "up"]


def _decimal(value: Human) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise TypeError(f"expected str, int or Decimal, got {type(value).__name__} "
                        "(floats are not exact; pass a string)")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def to_units(value: Human, scale: int, rounding: Rounding = "exact") -> int:
    """``value * scale`` as an int. ``exact`` (default) raises ``ValueError`` when the value
    has more decimals than the scale; ``down``/``up`` round toward -inf/+inf instead."""
    scaled = _decimal(value) * scale
    if rounding == "exact":
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value!r} is not a multiple of 1/{scale}")
        return int(scaled)
    return int(scaled.to_integral_value(ROUND_FLOOR if rounding == "down" else ROUND_CEILING))


def from_units(amount: int, scale: int) -> Decimal:
    """The exact decimal value of ``amount / scale``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amount must be an int")
    return Decimal(amount) / Decimal(scale)


def price(value: Human, rounding: Rounding = "exact") -> int:
    """A price in quote per base unit -> protocol price (1e8)."""
    return to_units(value, PRICE_SCALE, rounding)


def size(value: Human, rounding: Rounding = "exact") -> int:
    """A size in base units -> protocol size (1e8)."""
    return to_units(value, SIZE_SCALE, rounding)


def quote(value: Human, rounding: Rounding = "exact") -> int:
    """A quote amount (USD) -> quote atoms (1e6)."""
    return to_units(value, QUOTE_SCALE, rounding)


def token(value: Human, decimals: int, rounding: Rounding = "exact") -> int:
    """A collateral amount -> the token's atoms (``10**decimals``)."""
    return to_units(value, 10**decimals, rounding)


def ppm(value: Human, rounding: Rounding = "exact") -> int:
    """A fraction (``"0.001"`` = 0.1 %) -> parts per million."""
    return to_units(value, PPM, rounding)


def floor_to(value: int, step: int) -> int:
    """Largest multiple of ``step`` <= ``value`` (bids onto the tick, sizes onto the lot)."""
    return value // step * step


def ceil_to(value: int, step: int) -> int:
    """Smallest multiple of ``step`` >= ``value`` (asks onto the tick)."""
    return -((-value) // step) * step


def fmt(amount: int | None, scale: int, places: int | None = None) -> str:
    """Display string of ``amount / scale`` (``places`` decimals, truncated toward zero;
    all significant decimals when None). ``"-"`` for None."""
    if amount is None:
        return "-"
    d = from_units(amount, scale)
    if places is None:
        s = format(d.normalize(), "f")
        return s
    q = Decimal(1).scaleb(-places)
    return format(d.quantize(q, rounding=ROUND_DOWN), "f")
