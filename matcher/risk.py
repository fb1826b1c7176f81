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

from typing import Any, Mapping

from crossbook.fixedpoint import NOTIONAL_DIV, PPM, trunc_div
from crossbook.margin import (
    Position,
    Prices,
    RiskParams,
    SideOutcome,
    SubAccount,
    apply_fill_side,
    compute_health,
    reduces_without_flip,
    side_delta,
    simulate_fill_side_unpriced,
)
from matcher.native import use_source_if_stale

# per market: [buy size, buy size*price sum, sell size, sell size*price sum] and, in the
# engine's lists, the cache of RiskModel.floor_cached: [.., buy leg cost, sell leg cost,
# generation, buy size sum Q, its qd, its qt, sell size sum Q, its qd, its qt] (a cost or Q
# of -1: not known; qd = (Q * mark) // NOTIONAL_DIV, qt the part of the leg cost that
# depends on Q alone, see RiskModel._leg_cost). Only the first four are the exposure.
Exposure = dict[int, list[int]]


def new_exposure() -> list[int]:
    """A market's exposure list with nothing open and no cached leg cost."""
    return [0, 0, 0, 0, -1, -1, 0, -1, 0, 0, -1, 0, 0]


def at_generation(x: list[int], gen: int) -> None:
    """Bring exposure list ``x``'s cache to generation ``gen`` (RiskModel.floor_cached): what
    an older generation cached is forgotten."""
    if x[6] != gen:
        x[4] = x[5] = x[7] = x[10] = -1
        x[6] = gen

_NO_EXPOSURE: Exposure = {}
assert NOTIONAL_DIV == 9_765_625 << 10  # div_notional's factorization


class RiskModel:
    """Margin parameters, fees and the engine's current oracle prices."""

    def __init__(self, params: RiskParams, taker_fee_ppm: int, maker_fee_ppm: int) -> None:
        self.params = params
        self.taker_fee_ppm = taker_fee_ppm
        self.maker_fee_ppm = maker_fee_ppm
        self.asset_prices: dict[int, int] = {}
        # the order's own leg cost of the last floor_cached (-1: none), and the qd and qt the
        # last _leg_cost computed
        self.last_leg = -1
        self.last_qd = 0
        self.last_qt = 0
        self.market_prices: dict[int, int] = {}
        # the configs the order check reads, as plain dicts of ints: in the compiled module a
        # dict of tuples costs a fraction of a Mapping of dataclasses (params is frozen)
        self._bands: dict[int, tuple[tuple[int, int, int, int], ...]] = {
            m: mc.bands for m, mc in params.markets.items()}
        self._collaterals: dict[int, tuple[int, int]] = {
            a: (c.value_div, c.weight_init_ppm) for a, c in params.collaterals.items()}
        # market -> (sum of its bands' imf, number of bands), for :meth:`health_floor`; only
        # markets whose bands meet the proof's premises (ascending lower bounds from 0,
        # non-negative widths and fractions) and only with a haircut in [0, PPM]
        self._floor_terms: dict[int, tuple[int, int]] = {}
        if 0 <= params.pnl_haircut_ppm <= PPM:
            for m, bands in self._bands.items():
                if _bands_fit_floor(bands):
                    self._floor_terms[m] = (sum(b[2] for b in bands), len(bands))

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
        pv = div_notional(size * price)
        owed = -div_notional(size * (snapshot - funding[m]))
        gain = pv - basis
        notional = -div_notional(-(size if size > 0 else -size) * price)
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

    def base_health(self, st: SubAccount, funding: dict[int, int]) -> int | None:
        """``worst_case`` of ``st`` with no open orders at all (its initial health), the base
        of :meth:`health_floor`; None when that floor does not apply to ``st``: a needed price
        or index is missing, or a zero-size position carries an open notional (the proof
        assumes a flat position has none, as ``apply_fill_side`` leaves it)."""
        for p in st.positions.values():
            if not p.size and p.open_notional:
                return None
        try:
            return self.worst_case(st, _NO_EXPOSURE, True, funding, None)
        except KeyError:
            return None

    def health_floor(
        self,
        base: int,
        exposure: Exposure,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        fee_ppm: int,
        funding: dict[int, int],
        removed: tuple[int, int, int] | None = None,
    ) -> int | None:
        """A lower bound of ``worst_case(st, exposure, is_buy, funding, (market, size,
        size*price), removed)`` from ``base = base_health(st, funding)`` (not None), in a few
        multiplications per market instead of the full pass, with the legs paying ``fee_ppm``
        (``worst_case`` charges the taker fee; with an empty exposure and the maker fee this
        is :meth:`check_fill`'s health after the fill); None when a leg's market has no
        price, index or usable bands (the exact pass decides then, and raises if it must).
        When the floor is >= 0 the exact check accepts, so the engine runs that check only
        for accounts whose floor gets near zero.

        Proof. Let D = NOTIONAL_DIV, P a leg market's mark, f its funding index, h the haircut
        (0 <= h <= PPM), and per market with a leg of this side (Q > 0 summed sizes, N the sum
        of size*limit, cash c = N // D, fee = c*fee_ppm // PPM, whatever its sign): ``mis`` = N - QP for a buy,
        QP - N for a sell (what filling at the limits loses against the mark). ``worst_case``
        applies each leg as one fill to the position (S, B, snapshot) and then evaluates
        initial health; compared with ``base`` only the leg markets' terms change:

        1. Quote + PV - owed funding: the fill realizes exactly the owed funding it removes
           (both are ceil(S*(f - snapshot)/D) and the new snapshot is f), the quote moves by
           -c - fee (buy) or +c - fee (sell), and PV by floor(S'P/D) - floor(SP/D), which is
           > QP/D - 1 (buy) or > -QP/D - 1 (sell). With N/D - 1 < c <= N/D the change is
           > -mis/D - fee - 2.
        2. Gains G = sum max(PV - B, 0): the market's clipped gain grows by at most
           max(0, -mis/D) + 2. Same sign (or S = 0, where B = 0 is required): B' = B + c
           (buy; B - c sell) so the gain moves by < -mis/D + 2. Reducing (|S'| <= |S|, same
           sign): B' = trunc(B*S'/S), so gain' < r*gain + 2 with r = S'/S in [0, 1]. Flipping:
           B' = trunc(c*S'/Q) (sign-adjusted), so gain' <= t*(-mis/D) + 2 with t = |S'|/Q < 1.
           The haircut term -ceil(h*G/PPM) then falls by at most
           h/PPM * sum max(0, -mis/D) + 2*markets + 1, and h/PPM <= 1 folds it with step 1
           into -max(0, mis)/D per market.
        3. Requirement: notional' = ceil(|S'|P/D) <= notional + d with d = ceil(QP/D), since
           |S'| <= |S| + Q. With ascending band floors from 0 each band's clipped portion is
           monotone and moves by at most d, so the requirement grows by at most
           sum_b ceil(d*imf_b/PPM) <= ceil(d*sum imf/PPM) + bands (0 for a new position's
           notional 0).
        4. Collateral does not move.

        Summing, worst_case > base - sum over leg markets of (ceil(max(0, mis)/D) + fee +
        ceil(d*sum imf/PPM) + bands + 4) - 1; each market below adds 5 (and over-estimates
        d and the mis term from floor(QP/D) and the cash, see ``_leg_cost``), so the result is
        a lower bound whenever there is a leg (the new order always is one). Every KeyError the
        exact pass can raise comes from a price, index or config that ``base_health`` or the
        checks here already needed, so a floor is only returned where the exact pass would
        not raise. tests/matcher/test_risk_fast.py checks the bound against ``worst_case``.
        """
        off = 0 if is_buy else 2
        rm = -1
        rs = rp = 0
        if removed is not None:
            rm, rs, rp = removed
        total = 0
        new_seen = False
        for m, x in exposure.items():
            lsize, lpx = _leg(x, off, m, rm, rs, rp)
            if m == market:
                lsize += size
                lpx += size * price
                new_seen = True
            elif not lsize:
                continue
            c = self._leg_cost(m, lsize, lpx, is_buy, fee_ppm, funding)
            if c < 0:
                return None
            total += c
        if not new_seen:
            c = self._leg_cost(market, size, size * price, is_buy, fee_ppm, funding)
            if c < 0:
                return None
            total += c
        return base - total

    def floor_cached(
        self,
        base: int,
        exposure: Exposure,
        market: int,
        is_buy: bool,
        size: int,
        n: Any,
        funding: dict[int, int],
        rs: int,
        rp: int,
        gen: int,
    ) -> int | None:
        """:meth:`health_floor` at the taker fee (the same value, or None in the same cases),
        with the order's notional ``n`` (size * price: the engine computes it once, on the
        boxed fields, for this and its exposure), for the engine's exposure lists, whose
        slots 4 and 5 cache the buy and sell leg cost of their market (valid while slot 6
        equals ``gen``): a leg of another market than the order's is read from there when
        known, else computed and stored. The order's own
        leg (less ``rs`` size and ``rp`` notional of the replaced order, in this market) is
        always computed (from its size sum's qd and qt when cached), and left in
        :attr:`last_leg` (-1 when there is none), for the engine to store once the book has
        taken the order with no other change.

        The caller keeps the cache exact: a change of a list's size or notional sums of one
        side forgets that side's cost (``Engine._expose``), and a change of a market price,
        a funding index or the fee (any command other than an order command) moves ``gen``.
        A cached cost is then the value ``_leg_cost`` would return, so the sum is
        :meth:`health_floor`'s, and the proof there applies unchanged. Slots 7-12 keep, per
        side, the last size sum Q of the order's own leg with its qd and qt (valid at
        ``gen``: they depend on nothing else, and the mark, bands and index they needed were
        there), which a replacement of the same size finds again."""
        off = 0 if is_buy else 2
        slot = 4 if is_buy else 5
        qs = 7 if is_buy else 10
        fee_ppm = self.taker_fee_ppm
        total = 0
        new_seen = False
        self.last_leg = -1
        for m, x in exposure.items():
            if m == market:
                lsize, lpx = _leg(x, off, m, m, rs, rp)
                lsize += size
                lpx += n
                new_seen = True
                if x[qs] == lsize and x[6] == gen:
                    c = _cost(div_notional(lpx), x[qs + 1], x[qs + 2], is_buy, fee_ppm)
                else:
                    c = self._leg_cost(m, lsize, lpx, is_buy, fee_ppm, funding)
                    if c < 0:
                        return None
                    at_generation(x, gen)
                    x[qs] = lsize
                    x[qs + 1] = self.last_qd
                    x[qs + 2] = self.last_qt
                self.last_leg = c
            else:
                lsize = x[off]
                if not lsize:
                    continue
                c = x[slot]
                if c < 0 or x[6] != gen:
                    c = self._leg_cost(m, lsize, x[off + 1], is_buy, fee_ppm, funding)
                    if c < 0:
                        return None
                    at_generation(x, gen)
                    x[slot] = c
            total += c
        if not new_seen:
            c = self._leg_cost(market, size, n, is_buy, fee_ppm, funding)
            if c < 0:
                return None
            self.last_leg = c
            total += c
        return base - total

    def _leg_cost(self, m: int, q: int, n: int, is_buy: bool, fee_ppm: int,
                  funding: dict[int, int]) -> int:
        """One leg market's share of :meth:`health_floor`'s bound (always > 0), or -1 when
        the market lacks a price, a funding index or usable bands. The parts that depend on
        ``q`` alone, ``qd = (q * mark) // NOTIONAL_DIV`` and ``qt = ceil((qd + 1) * sum imf
        / PPM) + bands + 5``, are left in :attr:`last_qd` and :attr:`last_qt`."""
        price = self.market_prices.get(m)
        terms = self._floor_terms.get(m)
        if price is None or terms is None or m not in funding:
            return -1
        imf_sum, n_bands = terms
        # two divisions of the wide products, then small ints: qd <= QP/D < qd + 1 and
        # cash = N // D, so d = qd + 1 >= ceil(QP/D) and ceil(max(0, mis)/D) <= max(0, over)
        qd = self.last_qd = div_notional(q * price)
        qt = self.last_qt = -((-(qd + 1) * imf_sum) // PPM) + n_bands + 5
        return _cost(div_notional(n), qd, qt, is_buy, fee_ppm)

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
        rule (``H_im >= 0`` after, or strictly reduces risk; in a market without an oracle
        price, reduce-only mode's rule at the fill price). Returns the account after, or None
        if refused (a missing price refuses too)."""
        after = st.copy()
        cash = div_notional(size * price)
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
            if market not in self.market_prices:
                return self.check_fill_unpriced(st, market, is_buy, size, price, fee_ppm, funding)
            return None
        return None

    def check_fill_unpriced(
        self,
        st: SubAccount,
        market: int,
        is_buy: bool,
        size: int,
        price: int,
        fee_ppm: int,
        funding: Mapping[int, int],
    ) -> SubAccount | None:
        """:meth:`check_fill` in a market without an oracle price (reduce-only mode,
        docs/protocol.md §9.8): the contract applies the fill side only if it strictly reduces
        the position and leaves maintenance health >= 0 with the market valued at the fill
        price. Returns the account after, or None if refused (a missing other price too)."""
        try:
            out = self._unpriced_fill(st, market, is_buy, size, price, fee_ppm, funding)
        except KeyError:
            return None
        return out.account_after if out.accepted else None

    def closes_solvently(
        self, st: SubAccount, market: int, is_buy: bool, size: int, price: int, lot: int,
        funding: Mapping[int, int],
    ) -> bool:
        """Reduce-only mode's pre-trade test of an order that reduces the position in a market
        without an oracle price: :meth:`check_fill_unpriced` accepts it at its limit (the
        worst fill price it allows) with the taker fee, both as one full fill and as a first
        fill of one lot (a small fill leaves the most requirement). Raises KeyError when
        another price the account needs is missing."""
        return all(
            self._unpriced_fill(st, market, is_buy, q, price, self.taker_fee_ppm, funding).accepted
            for q in ((size,) if size <= lot else (lot, size)))

    def _unpriced_fill(self, st: SubAccount, market: int, is_buy: bool, size: int, price: int,
                       fee_ppm: int, funding: Mapping[int, int]) -> SideOutcome:
        """crossbook.margin's reduce-only-mode outcome of one fill side (KeyError: a price
        missing)."""
        cash = div_notional(size * price)
        d, signed = side_delta(is_buy, size, cash)
        prices = Prices(self.asset_prices, self.market_prices, funding)
        return simulate_fill_side_unpriced(st, self.params, prices, market, price, d, signed,
                                           cash * fee_ppm // PPM)


def div_notional(x: int) -> int:
    """``x // NOTIONAL_DIV`` as a shift and a division by 5**10, which fits one 30-bit
    digit: CPython's single-digit division instead of its long division (the floor of a
    floor is the floor of the quotient for positive divisors)."""
    return (x >> 10) // 9_765_625


def _cost(cash: int, qd: int, qt: int, is_buy: bool, fee_ppm: int) -> int:
    """``RiskModel._leg_cost`` from the leg's cash (``N // NOTIONAL_DIV``) and its size
    sum's ``qd`` and ``qt``."""
    over = (cash - qd if is_buy else qd - cash) + 1
    cost = cash * fee_ppm // PPM + qt
    return cost + over if over > 0 else cost


def _bands_fit_floor(bands: tuple[tuple[int, int, int, int], ...]) -> bool:
    """True when a market's bands meet :meth:`RiskModel.health_floor`'s premises: lower
    bounds ascending from >= 0, widths and initial fractions >= 0."""
    prev = 0
    for lo, width, imf, _mmf in bands:
        if lo < prev or width < 0 or imf < 0:
            return False
        prev = lo
    return True


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
    cash = div_notional(lpx)
    fee = cash * fee_ppm // PPM
    delta = lsize if is_buy else -lsize
    cash_signed = cash if is_buy else -cash
    realized = -div_notional(-(s * (findex - snapshot)))
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


__all__ = ["Exposure", "RiskModel", "at_generation", "div_notional", "new_exposure"]


# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
