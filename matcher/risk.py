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

from crossbook.fixedpoint import NOTIONAL_DIV, PPM, trunc_div
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
        removed: tuple[int, int, int] | None = None,
    ) -> int:
        """Initial health after every open order of one side (plus ``extra`` = (market, size,
        size*price) of a new order) fills at its limit with the taker fee. ``removed`` (same
        shape) is an open order of that side being replaced: its share of the exposure does
        not count.

        Equal to applying each market's aggregate fill with ``apply_fill_side`` to a copy of
        ``st`` and taking ``compute_health(...).initial_health`` (tests/matcher/test_risk.py
        holds that reference), but computed in one pass without copying the account: this runs
        on every place and modify. Raises KeyError when a needed oracle price is missing, in
        exactly the cases the reference does.
        """
        off = 0 if is_buy else 2
        legs: dict[int, tuple[int, int]] = {}
        for m, x in exposure.items():
            size = x[off]
            px = x[off + 1]
            if removed is not None and m == removed[0]:
                size -= removed[1]
                px -= removed[2]
            if size:
                legs[m] = (size, px)
        if extra is not None:
            m, size, px = extra
            leg = legs.get(m)
            if leg is not None:
                size += leg[0]
                px += leg[1]
            legs[m] = (size, px)
        return self._scenario_health(st, legs, is_buy, funding)

    def _scenario_health(
        self,
        st: SubAccount,
        legs: dict[int, tuple[int, int]],
        is_buy: bool,
        funding: Mapping[int, int],
    ) -> int:
        """``compute_health(...).initial_health`` of ``st`` after one fill side per leg
        (market -> (unsigned size, size*price sum)) at the taker fee, ``apply_fill_side``'s
        arithmetic inlined. Sums of exact integers, so the order of the terms is free."""
        params = self.params
        fee_ppm = self.taker_fee_ppm
        asset_prices = self.asset_prices
        market_prices = self.market_prices
        markets = params.markets
        collaterals = params.collaterals
        w_init = 0
        for asset, amount in st.collateral.items():
            if amount:
                cfg = collaterals[asset]
                value = amount * asset_prices[asset] // cfg.value_div
                w_init += value * cfg.weight_init_ppm // PPM
        quote = st.quote
        pos_total = 0  # sum PV - sum owed funding
        upnl_gain = 0  # sum max(PV - open notional, 0)
        req_i = 0
        positions = st.positions
        for m, pos in positions.items():
            leg = legs.get(m)
            if leg is None:
                size = pos.size
                if not size:
                    continue
                price = market_prices[m]
                pv = size * price // NOTIONAL_DIV
                owed = -((size * (pos.funding_snapshot - funding[m])) // NOTIONAL_DIV)
                basis = pos.open_notional
            else:
                # apply_fill_side on the position, then its health terms
                cash = leg[1] // NOTIONAL_DIV
                fee = cash * fee_ppm // PPM
                delta = leg[0] if is_buy else -leg[0]
                if not delta:
                    raise ValueError("a fill side needs a non-zero delta")
                cash_signed = cash if is_buy else -cash
                s = pos.size
                findex = funding.get(m, 0)
                realized = -((-(s * (findex - pos.funding_snapshot))) // NOTIONAL_DIV)
                quote -= realized + cash_signed + fee
                size = s + delta
                if not size:
                    continue
                basis = _next_open_notional(s, delta, pos.open_notional, cash_signed)
                price = market_prices[m]
                pv = size * price // NOTIONAL_DIV
                # the fill moved the snapshot to the index: nothing owed, but a missing index
                # still raises like the reference
                owed = -((size * (findex - funding[m])) // NOTIONAL_DIV)
            pos_total += pv - owed
            gain = pv - basis
            if gain > 0:
                upnl_gain += gain
            notional = -((-(size if size > 0 else -size) * price) // NOTIONAL_DIV)
            for lo, width, imf, _mmf in markets[m].bands:
                portion = notional - lo
                if portion <= 0:
                    break
                if portion > width:
                    portion = width
                req_i -= (-portion * imf) // PPM
        for m, leg in legs.items():
            if m in positions:
                continue
            # a new position: opened at the index, cost basis = the signed cash
            cash = leg[1] // NOTIONAL_DIV
            fee = cash * fee_ppm // PPM
            size = leg[0] if is_buy else -leg[0]
            if not size:
                raise ValueError("a fill side needs a non-zero delta")
            cash_signed = cash if is_buy else -cash
            quote -= cash_signed + fee
            price = market_prices[m]
            pv = size * price // NOTIONAL_DIV
            owed = -((size * (funding.get(m, 0) - funding[m])) // NOTIONAL_DIV)
            pos_total += pv - owed
            gain = pv - cash_signed
            if gain > 0:
                upnl_gain += gain
            notional = -((-(size if size > 0 else -size) * price) // NOTIONAL_DIV)
            for lo, width, imf, _mmf in markets[m].bands:
                portion = notional - lo
                if portion <= 0:
                    break
                if portion > width:
                    portion = width
                req_i -= (-portion * imf) // PPM
        initial_equity = (quote + pos_total + w_init
                          + ((-upnl_gain * params.pnl_haircut_ppm) // PPM))
        return initial_equity - req_i

    def check_order(
        self,
        st: SubAccount,
        exposure: Exposure | None,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        funding: Mapping[int, int],
        removed: tuple[int, int, int] | None = None,
    ) -> bool:
        """True when a new order is acceptable (see the module docstring). ``removed`` is an
        open order of the same market and side that this one replaces. Raises KeyError on a
        missing oracle price."""
        exp = exposure if exposure is not None else _NO_EXPOSURE
        h_with = self.worst_case(st, exp, is_buy, funding, (market, size, size * price),
                                 removed)
        if h_with >= 0:
            return True
        if not self.reduces(st, exp, market, is_buy, size, removed):
            return False
        return h_with >= self.worst_case(st, exp, is_buy, funding, None, removed)

    def reduces(
        self, st: SubAccount, exposure: Exposure | None, market: int, is_buy: bool, size: int,
        removed: tuple[int, int, int] | None = None,
    ) -> bool:
        """True when this order and its side's other open orders in the market (less
        ``removed``, an order it replaces), all filled, shrink the position without flipping
        it (the order cannot add risk there)."""
        p = st.positions.get(market)
        s = 0 if p is None else p.size
        if not s:
            return False
        x = exposure.get(market) if exposure is not None else None
        open_same = 0 if x is None else (x[0] if is_buy else x[2])
        if removed is not None and x is not None and removed[0] == market:
            open_same -= removed[1]
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


def _next_open_notional(size: int, delta: int, open_notional: int, cash_signed: int) -> int:
    """``crossbook.margin.next_open_notional``, compiled with the risk check."""
    new_size = size + delta
    if new_size == 0:
        return 0
    if size == 0 or (size > 0) == (delta > 0):
        return open_notional + cash_signed
    if (delta if delta > 0 else -delta) <= (size if size > 0 else -size):
        return trunc_div(open_notional * new_size, size)
    return trunc_div(cash_signed * new_size, delta)


__all__ = ["Exposure", "RiskModel"]


# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
