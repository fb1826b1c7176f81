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
        # the configs the order check reads, as plain dicts of ints: in the compiled module a
        # dict of tuples costs a fraction of a Mapping of dataclasses (params is frozen)
        self._bands: dict[int, tuple[tuple[int, int, int, int], ...]] = {
            m: mc.bands for m, mc in params.markets.items()}
        self._collaterals: dict[int, tuple[int, int]] = {
            a: (c.value_div, c.weight_init_ppm) for a, c in params.collaterals.items()}

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
        funding: dict[int, int],
        extra: tuple[int, int, int] | None,
        removed: tuple[int, int, int] | None = None,
    ) -> int:
        """Initial health after every open order of one side (plus ``extra`` = (market, size,
        size*price) of a new order) fills at its limit with the taker fee. ``removed`` (same
        shape) is an open order of that side being replaced: its share of the exposure does
        not count.

        Equal to applying each market's aggregate fill with ``apply_fill_side`` to a copy of
        ``st`` and taking ``compute_health(...).initial_health`` (tests/matcher/test_risk_fast.py
        holds that reference), but computed in one pass without copying the account: this runs
        on every place and modify. Raises KeyError when a needed oracle price is missing, in
        exactly the cases the reference does.
        """
        # no intermediate containers: the legs are read straight from the exposure (tuples of
        # ints returned by the helpers below are unboxed by mypyc, so nothing is allocated)
        off = 0 if is_buy else 2
        xm = rm = -1
        xs = xp = rs = rp = 0
        if extra is not None:
            xm, xs, xp = extra
        if removed is not None:
            rm, rs, rp = removed
        fee_ppm = self.taker_fee_ppm
        asset_prices = self.asset_prices
        collaterals = self._collaterals
        w_init = 0
        for asset, amount in st.collateral.items():
            if amount:
                value_div, weight_init = collaterals[asset]
                value = amount * asset_prices[asset] // value_div
                w_init += value * weight_init // PPM
        quote = st.quote
        pos_total = 0  # sum PV - sum owed funding
        upnl_gain = 0  # sum max(PV - open notional, 0)
        req_i = 0
        positions = st.positions
        for m, pos in positions.items():
            lsize, lpx = _leg(exposure.get(m), off, m, rm, rs, rp)
            if m == xm:
                lsize += xs
                lpx += xp
            elif not lsize:
                size = pos.size
                if not size:
                    continue
                t, g, r = self._terms(m, size, pos.open_notional, pos.funding_snapshot,
                                      funding)
                pos_total += t
                upnl_gain += g
                req_i += r
                continue
            dq, size, basis, findex = _fill(pos.size, pos.open_notional, pos.funding_snapshot,
                                            lsize, lpx, is_buy, fee_ppm, funding.get(m, 0))
            quote += dq
            if size:
                t, g, r = self._terms(m, size, basis, findex, funding)
                pos_total += t
                upnl_gain += g
                req_i += r
        for m, x in exposure.items():
            if m in positions:
                continue
            lsize, lpx = _leg(x, off, m, rm, rs, rp)
            if m == xm:
                lsize += xs
                lpx += xp
            elif not lsize:
                continue
            # a new position: opened at the index, so nothing is realized
            dq, size, basis, findex = _fill(0, 0, funding.get(m, 0), lsize, lpx, is_buy,
                                            fee_ppm, funding.get(m, 0))
            quote += dq
            t, g, r = self._terms(m, size, basis, findex, funding)
            pos_total += t
            upnl_gain += g
            req_i += r
        if xm >= 0 and xm not in positions and xm not in exposure:
            dq, size, basis, findex = _fill(0, 0, funding.get(xm, 0), xs, xp, is_buy, fee_ppm,
                                            funding.get(xm, 0))
            quote += dq
            t, g, r = self._terms(xm, size, basis, findex, funding)
            pos_total += t
            upnl_gain += g
            req_i += r
        initial_equity = (quote + pos_total + w_init
                          + ((-upnl_gain * self.params.pnl_haircut_ppm) // PPM))
        return initial_equity - req_i

    def _terms(self, m: int, size: int, basis: int, snapshot: int,
               funding: dict[int, int]) -> tuple[int, int, int]:
        """One non-zero position's share of ``compute_health``: (PV - owed funding,
        max(PV - open notional, 0), initial requirement). KeyError on a missing price/index."""
        price = self.market_prices[m]
        pv = size * price // NOTIONAL_DIV
        owed = -((size * (snapshot - funding[m])) // NOTIONAL_DIV)
        gain = pv - basis
        notional = -((-(size if size > 0 else -size) * price) // NOTIONAL_DIV)
        req_i = 0
        # crossbook.margin.requirements' initial half, inlined like compute_health inlines it:
        # a call into the interpreted module would cost more than the whole loop
        for lo, width, imf, _mmf in self._bands[m]:
            portion = notional - lo
            if portion <= 0:
                break
            if portion > width:
                portion = width
            req_i -= (-portion * imf) // PPM
        return pv - owed, gain if gain > 0 else 0, req_i

    def check_order(
        self,
        st: SubAccount,
        exposure: Exposure | None,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        funding: dict[int, int],
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


def _leg(x: list[int] | None, off: int, m: int, rm: int, rs: int, rp: int) -> tuple[int, int]:
    """(size, size*price) of one side's open orders in market ``m`` less the replaced order
    (market ``rm``); (0, 0) when nothing stays open, like an absent leg."""
    if x is None:
        return 0, 0
    size = x[off]
    px = x[off + 1]
    if m == rm:
        size -= rs
        px -= rp
    if not size:
        return 0, 0
    return size, px


def _fill(s: int, basis: int, snapshot: int, lsize: int, lpx: int, is_buy: bool, fee_ppm: int,
          findex: int) -> tuple[int, int, int, int]:
    """``apply_fill_side`` of one aggregate leg (unsigned size, size*price sum) at the taker
    fee on a position (size, open notional, funding snapshot): returns (quote change, size,
    open notional, funding snapshot) after."""
    if not lsize:
        raise ValueError("a fill side needs a non-zero delta")
    cash = lpx // NOTIONAL_DIV
    fee = cash * fee_ppm // PPM
    delta = lsize if is_buy else -lsize
    cash_signed = cash if is_buy else -cash
    realized = -((-(s * (findex - snapshot))) // NOTIONAL_DIV)
    return (-(realized + cash_signed + fee), s + delta,
            _next_open_notional(s, delta, basis, cash_signed), findex)


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
