"""Funding-rate computation (sans-I/O): premium of the impact mid over the oracle, averaged over
an interval and clamped, all in integer ppm.

Sign convention (docs/protocol.md §3 "Funding"): a positive rate means longs pay shorts. The
premium is positive when the book trades above the oracle, so longs (who pushed it up) pay.
The contract applies ``F += trunc_div(rate * p, PPM)`` and each side owes
``ceil(size * dF / 1e10)``; rounding up on both sides means a long and a short of equal size
together owe 0 or 1 atom, never less: funding is zero-sum up to a rounding in the system's
favour.

Posting is not done here: the matcher will sequence a :class:`FundingItem` on its stream;
:class:`FundingPoster` produces those items through a :class:`FundingSink`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

from crossbook.fixedpoint import NOTIONAL_DIV, PPM, trunc_div
from crossbook.margin import clamp_funding_rate
from crossbook.protocol_types import FundingItem


def impact_price(levels: Sequence[tuple[int, int]], impact_notional: int) -> int | None:
    """Average fill price (1e8, rounded toward the book's far side) of taking
    ``impact_notional`` quote atoms from ``levels`` = ``[(price, size), ...]`` best first.

    Returns None when the book is too thin to fill the impact notional.
    """
    remaining = impact_notional * NOTIONAL_DIV  # in size*price units, so no division per level
    filled_size = 0
    for price, size in levels:
        take = min(size * price, remaining)
        # size taken at this level: exact when the level is consumed in full
        filled_size += size if take == size * price else take // price
        remaining -= take
        if remaining == 0:
            break
    if remaining > 0 or filled_size == 0:
        return None
    return -((-impact_notional * NOTIONAL_DIV) // filled_size)  # ceil: never flatter than the book


def premium_ppm(impact_bid: int, impact_ask: int, oracle_price: int) -> int:
    """``(impact_mid - oracle) / oracle`` in ppm, truncated toward zero (symmetric for both
    signs, so a premium and its mirror discount give opposite rates)."""
    if oracle_price <= 0:
        raise ValueError("oracle price must be positive")
    mid2 = impact_bid + impact_ask  # 2*mid: keep the half-tick instead of rounding it away
    return trunc_div((mid2 - 2 * oracle_price) * PPM, 2 * oracle_price)


@dataclass
class _Acc:
    total: int = 0
    count: int = 0


@dataclass
class FundingCalculator:
    """Accumulates premium samples per market and closes intervals into clamped rates.

    ``max_rate_ppm`` per market is the contract's ``max_funding_ppm`` (the contract clamps too;
    clamping here as well makes the posted item equal to what the chain will apply).
    ``interest_ppm`` is a constant added per interval (0 by default).
    """

    max_rate_ppm: Mapping[int, int]
    interest_ppm: int = 0
    _acc: dict[int, _Acc] = field(default_factory=dict)

    def add_sample(self, market: int, impact_bid: int, impact_ask: int, oracle_price: int) -> int:
        """Record one premium sample; returns it (ppm)."""
        p = premium_ppm(impact_bid, impact_ask, oracle_price)
        acc = self._acc.setdefault(market, _Acc())
        acc.total += p
        acc.count += 1
        return p

    def rate(self, market: int) -> int:
        """Current interval's rate: mean premium (truncated) + interest, clamped. 0 without samples."""
        acc = self._acc.get(market)
        if acc is None or acc.count == 0:
            return 0
        raw = trunc_div(acc.total, acc.count) + self.interest_ppm
        return clamp_funding_rate(raw, self.max_rate_ppm[market])

    def close_interval(self) -> dict[int, int]:
        """Rates of every market with samples, and a fresh interval."""
        rates = {m: self.rate(m) for m, acc in self._acc.items() if acc.count}
        self._acc.clear()
        return rates


def index_delta(rate_ppm: int, max_rate_ppm: int, oracle_price: int) -> int:
    """What the contract adds to the cumulative index: ``trunc_div(clamp(rate) * p, PPM)``."""
    return trunc_div(clamp_funding_rate(rate_ppm, max_rate_ppm) * oracle_price, PPM)


class FundingSink(Protocol):
    """Where funding items go (the matcher's sequenced stream, once it accepts them)."""

    def submit(self, item: FundingItem) -> None:
        """Queue one funding item for sequencing."""


class FundingPoster:
    """Turns closed intervals into :class:`FundingItem`s for a sink. Sans-I/O: the caller
    decides when an interval ends (e.g. every hour of chain time)."""

    def __init__(self, calculator: FundingCalculator, sink: FundingSink) -> None:
        self.calculator = calculator
        self.sink = sink
        self.posted = 0  # items submitted over the poster's life (a count: it runs for months)

    def end_interval(self) -> list[FundingItem]:
        """Close the interval and submit one item per market with samples."""
        items = [FundingItem(market=m, rate_ppm=r) for m, r in sorted(self.calculator.close_interval().items())]
        for it in items:
            self.sink.submit(it)
        self.posted += len(items)
        return items
