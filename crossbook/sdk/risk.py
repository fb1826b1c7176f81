"""Account risk figures for bots and the dashboard: health summary, leverage and per-position
liquidation prices. Integer math on top of :func:`crossbook.margin.compute_health`.

Liquidation price of a position: the oracle price of its market at which the sub-account's
maintenance health crosses below 0, every other price (and the funding indices) held fixed.

- long: the **highest** price ``p`` with ``H_mm(p) < 0``; at every price above it the account is
  not liquidatable (as far as this market's price goes).
- short: the **lowest** such price; at every price below it the account is safe.

``None`` when no price in ``[1, 2**64 - 1]`` makes the account liquidatable. When it is already
liquidatable at the current price the result is still the boundary (above the current price for
a long, below it for a short).

Why a search and not a closed form: ``H_mm`` is piecewise linear in the price with tiered
requirements and floor/ceil roundings. For a short it is non-increasing in ``p``. For a long
``PV = floor(s*p/D)`` and ``N = ceil(s*p/D)`` differ by one except where ``s*p`` is a multiple
of ``D``, so ``H_mm`` can be one atom higher at those isolated exact prices than at their
neighbours: the liquidatable set is a prefix with isolated holes. The predicate
``Q(p) = H(p) < 0 or H(p+1) < 0`` closes the holes (they are never adjacent unless every price is
exact, in which case there are none) and is monotone, so a binary search finds the boundary
exactly. Tests check the result against ``compute_health`` at and around it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import Health, Prices, RiskParams, SubAccount, compute_health

MAX_PRICE = 2**64 - 1


def _mm_health(account: SubAccount, params: RiskParams, prices: Prices, market: int,
               price: int) -> int:
    markets = dict(prices.markets)
    markets[market] = price
    return compute_health(account, params, prices.assets, markets, prices.funding).maintenance_health


def liquidation_price(account: SubAccount, params: RiskParams, prices: Prices,
                      market: int) -> int | None:
    """The liquidation price (1e8) of the position in ``market`` (see the module docstring);
    ``None`` for no position or when no price liquidates the account."""
    pos = account.positions.get(market)
    if pos is None or pos.size == 0:
        return None

    def liq(p: int) -> bool:
        return _mm_health(account, params, prices, market, p) < 0

    if pos.size < 0:
        # non-increasing in p: the lowest liquidatable price
        if not liq(MAX_PRICE):
            return None
        lo, hi = 1, MAX_PRICE  # answer in [lo, hi]
        if liq(lo):
            return lo
        while hi - lo > 1:  # invariant: not liq(lo), liq(hi)
            mid = (lo + hi) // 2
            if liq(mid):
                hi = mid
            else:
                lo = mid
        return hi

    def q(p: int) -> bool:
        return liq(p) or (p < MAX_PRICE and liq(p + 1))

    if not q(1):
        return None
    if q(MAX_PRICE):
        return MAX_PRICE
    lo, hi = 1, MAX_PRICE  # invariant: q(lo), not q(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if q(mid):
            lo = mid
        else:
            hi = mid
    # q(lo) and not q(lo + 1): lo + 1 is safe, so lo itself is the last liquidatable price
    return lo


@dataclass(frozen=True)
class PositionRisk:
    """One position with its mark value and liquidation price."""

    market: int
    size: int
    open_notional: int
    oracle_price: int
    notional: int  # quote atoms, unsigned
    unrealized_pnl: int  # quote atoms
    liquidation_price: int | None


@dataclass(frozen=True)
class AccountRisk:
    """What the dashboard shows for a sub-account (quote atoms unless noted)."""

    health: Health
    quote: int
    collateral: Mapping[int, int]
    total_notional: int
    leverage_ppm: int | None  # total notional / equity in ppm; None when equity <= 0
    liquidatable: bool
    positions: tuple[PositionRisk, ...]


def account_risk(account: SubAccount, params: RiskParams, prices: Prices) -> AccountRisk:
    """Health, leverage and per-position liquidation prices of one sub-account."""
    h = compute_health(account, params, prices.assets, prices.markets, prices.funding)
    rows = []
    total = 0
    for m in sorted(account.positions):
        pos = account.positions[m]
        if pos.size == 0:
            continue
        px = prices.markets[m]
        notional = -((-abs(pos.size) * px) // NOTIONAL_DIV)  # ceil, like the margin formula
        pv = pos.size * px // NOTIONAL_DIV
        total += notional
        rows.append(PositionRisk(m, pos.size, pos.open_notional, px, notional,
                                 pv - pos.open_notional,
                                 liquidation_price(account, params, prices, m)))
    leverage = total * PPM // h.equity if h.equity > 0 else None
    return AccountRisk(h, account.quote, dict(account.collateral), total, leverage,
                       h.maintenance_health < 0, tuple(rows))
