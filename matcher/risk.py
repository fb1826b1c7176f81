"""Pre-trade risk on the shadow ledger's projected state (brief invariant 6).

Open orders are kept aggregated per (sub-account, market, side) as open size and the sum of
``size * limit`` (the notional numerator), updated incrementally by the engine, so a check costs
O(markets with positions or orders) and never walks the account's orders.

The order check is the worst case of the order's side: all open orders of that side, in every
market, plus the new one, filled at their limits and paying the taker fee. The other side's
worst case does not change when an order is added, so it is not recomputed. An order passes if
initial health stays >= 0 in that scenario, or if it only reduces risk (its side's fills shrink
the position in its market without flipping it, and health does not fall).
"""

from __future__ import annotations

from typing import Mapping

from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import (
    RiskParams,
    SubAccount,
    apply_fill_side,
    compute_health,
    reduces_without_flip,
)
from matcher.native import use_source_if_stale

# per market: [buy size, buy size*price sum, sell size, sell size*price sum]
Exposure = dict[int, list[int]]

_NO_EXPOSURE: Exposure = {}


class RiskModel:
    """Margin parameters, fees and the engine's current oracle prices."""

    def __init__(self, params: RiskParams, taker_fee_ppm: int, maker_fee_ppm: int) -> None:
        self.params = params
        self.taker_fee_ppm = taker_fee_ppm
        self.maker_fee_ppm = maker_fee_ppm
        self.asset_prices: dict[int, int] = {}
        self.market_prices: dict[int, int] = {}

    def health(self, st: SubAccount, funding: Mapping[int, int]) -> int:
        """Initial health of ``st``; raises KeyError when a needed price is missing."""
        # the engine seeds every market's funding index (0 = the contract's initial index)
        return compute_health(st, self.params, self.asset_prices, self.market_prices,
                              funding).initial_health

    def worst_case(
        self,
        st: SubAccount,
        exposure: Exposure,
        is_buy: bool,
        funding: Mapping[int, int],
        extra: tuple[int, int, int] | None,
    ) -> int:
        """Initial health after every open order of one side (plus ``extra`` = (market, size,
        size*price) of a new order) fills at its limit with the taker fee.

        Raises KeyError when a needed oracle price is missing.
        """
        scen = st.copy()
        fee_ppm = self.taker_fee_ppm
        off = 0 if is_buy else 2
        legs: dict[int, tuple[int, int]] = {}
        for m, x in exposure.items():
            if x[off]:
                legs[m] = (x[off], x[off + 1])
        if extra is not None:
            m, size, px = extra
            s0, p0 = legs.get(m, (0, 0))
            legs[m] = (s0 + size, p0 + px)
        for m, (size, px) in legs.items():
            cash = px // NOTIONAL_DIV
            fee = cash * fee_ppm // PPM
            if is_buy:
                apply_fill_side(scen, m, size, cash, fee, funding.get(m, 0))
            else:
                apply_fill_side(scen, m, -size, -cash, fee, funding.get(m, 0))
        return self.health(scen, funding)

    def check_order(
        self,
        st: SubAccount,
        exposure: Exposure | None,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        funding: Mapping[int, int],
    ) -> bool:
        """True when a new order is acceptable (see the module docstring). Raises KeyError on a
        missing oracle price."""
        exp = exposure if exposure is not None else _NO_EXPOSURE
        h_with = self.worst_case(st, exp, is_buy, funding, (market, size, size * price))
        if h_with >= 0:
            return True
        if not self.reduces(st, exp, market, is_buy, size):
            return False
        return h_with >= self.worst_case(st, exp, is_buy, funding, None)

    def reduces(
        self, st: SubAccount, exposure: Exposure | None, market: int, is_buy: bool, size: int
    ) -> bool:
        """True when this order and its side's other open orders in the market, all filled,
        shrink the position without flipping it (the order cannot add risk there)."""
        p = st.positions.get(market)
        s = 0 if p is None else p.size
        if not s:
            return False
        x = exposure.get(market) if exposure is not None else None
        open_same = 0 if x is None else (x[0] if is_buy else x[2])
        d = open_same + size
        return reduces_without_flip(s, s + d if is_buy else s - d)

    def check_fill(
        self,
        st: SubAccount,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        fee_ppm: int,
        funding: Mapping[int, int],
    ) -> SubAccount | None:
        """The maker re-check: apply one fill side to a copy of ``st`` and run the contract's
        rule (``H_im >= 0`` after, or strictly reduces risk). Returns the account after, or None
        if refused (a missing price refuses too)."""
        after = st.copy()
        cash = size * price // NOTIONAL_DIV
        fee = cash * fee_ppm // PPM
        findex = funding.get(market, 0)
        p = st.positions.get(market)
        s = 0 if p is None else p.size
        d = size if is_buy else -size
        apply_fill_side(after, market, d, cash if is_buy else -cash, fee, findex)
        try:
            h_after = self.health(after, funding)
            if h_after >= 0:
                return after
            if reduces_without_flip(s, s + d) and h_after >= self.health(st, funding):
                return after
        except KeyError:
            return None
        return None


__all__ = ["Exposure", "RiskModel"]


# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
