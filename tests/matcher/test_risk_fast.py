"""The single-pass worst-case health of matcher.risk against the margin code it inlines.

The reference is what RiskModel computed before: copy the account, apply one aggregate fill
side per market with ``crossbook.margin.apply_fill_side``, then ``compute_health``. Random
accounts (positions of either sign, zero positions, stale funding snapshots, collateral),
random open exposure, replaced orders and prices, with prices or funding indices sometimes
missing: the health, the KeyError cases and the accept/reject decision must all agree.
"""

from __future__ import annotations

from typing import Mapping

from hypothesis import given, settings
from hypothesis import strategies as hs

from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, risk_params
from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import (
    Position,
    SubAccount,
    apply_fill_side,
    compute_health,
    reduces_without_flip,
)
from matcher.risk import Exposure, RiskModel

MARKETS = (0, 1, 2)
TAKER = 500


def reference_worst_case(r: RiskModel, st: SubAccount, exposure: Exposure, is_buy: bool,
                         funding: Mapping[int, int], extra: tuple[int, int, int] | None,
                         removed: tuple[int, int, int] | None) -> int:
    """The pre-optimisation algorithm, verbatim on a copied exposure."""
    exposure = {m: list(v) for m, v in exposure.items()}
    off = 0 if is_buy else 2
    if removed is not None:
        x = exposure[removed[0]]
        x[off] -= removed[1]
        x[off + 1] -= removed[2]
    scen = st.copy()
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
        fee = cash * TAKER // PPM
        if is_buy:
            apply_fill_side(scen, m, size, cash, fee, funding.get(m, 0))
        else:
            apply_fill_side(scen, m, -size, -cash, fee, funding.get(m, 0))
    return compute_health(scen, r.params, r.asset_prices, r.market_prices,
                          funding).initial_health


def reference_check(r: RiskModel, st: SubAccount, exposure: Exposure, market: int,
                    is_buy: bool, size: int, price: int, funding: Mapping[int, int],
                    removed: tuple[int, int, int] | None) -> bool:
    """The pre-optimisation check_order."""
    h_with = reference_worst_case(r, st, exposure, is_buy, funding,
                                  (market, size, size * price), removed)
    if h_with >= 0:
        return True
    p = st.positions.get(market)
    s = 0 if p is None else p.size
    if not s:
        return False
    x = exposure.get(market)
    open_same = 0 if x is None else (x[0] if is_buy else x[2])
    if removed is not None and x is not None:
        open_same -= removed[1]
    d = open_same + size
    if not reduces_without_flip(s, s + d if is_buy else s - d):
        return False
    return h_with >= reference_worst_case(r, st, exposure, is_buy, funding, None, removed)


def outcome(f, *args):  # type: ignore[no-untyped-def]
    """The value, or the exception type, of ``f(*args)``."""
    try:
        return f(*args)
    except KeyError:
        return KeyError


prices = hs.integers(100, 80_000).map(lambda p: p * PRICE)
lots = hs.integers(-400, 400).map(lambda n: n * SIZE // 10)
positions = hs.dictionaries(
    hs.sampled_from(MARKETS),
    hs.builds(Position, lots, hs.integers(-10**13, 10**13), hs.integers(-10**9, 10**9)),
    max_size=3)
exposures = hs.dictionaries(
    hs.sampled_from(MARKETS),
    hs.tuples(hs.integers(0, 200), prices, hs.integers(0, 200), prices).map(
        lambda t: [t[0] * SIZE // 10, t[0] * SIZE // 10 * t[1],
                   t[2] * SIZE // 10, t[2] * SIZE // 10 * t[3]]),
    max_size=3)


@settings(max_examples=600, deadline=None)
@given(
    quote=hs.integers(-10**12, 10**12),
    collateral=hs.dictionaries(hs.sampled_from((1, 2)), hs.integers(0, 10**20), max_size=2),
    pos=positions,
    exposure=exposures,
    market=hs.sampled_from(MARKETS),
    is_buy=hs.booleans(),
    size=hs.integers(1, 300).map(lambda n: n * SIZE // 10),
    price=prices,
    mprices=hs.dictionaries(hs.sampled_from(MARKETS), prices, min_size=2),
    funding=hs.dictionaries(hs.sampled_from(MARKETS), hs.integers(-10**9, 10**9), min_size=2),
    replace=hs.booleans(),
)
def test_fast_worst_case_equals_reference(
    quote: int, collateral: dict[int, int], pos: dict[int, Position], exposure: Exposure,
    market: int, is_buy: bool, size: int, price: int, mprices: dict[int, int],
    funding: dict[int, int], replace: bool,
) -> None:
    r = RiskModel(risk_params(DEFAULT_SPEC), TAKER, 200)
    r.market_prices.update(mprices)
    r.asset_prices.update({1: 3000 * PRICE, 2: 60_000 * PRICE})
    st = SubAccount(quote, collateral, pos)
    removed = None
    if replace:
        # an open order of this side being replaced: part of the side's exposure
        x = exposure.setdefault(market, [0, 0, 0, 0])
        off = 0 if is_buy else 2
        x[off] += SIZE
        x[off + 1] += SIZE * price
        removed = (market, SIZE, SIZE * price)
    before = st.copy()
    extra = (market, size, size * price)
    for ex in (extra, None):
        want = outcome(reference_worst_case, r, st, exposure, is_buy, funding, ex, removed)
        got = outcome(r.worst_case, st, exposure, is_buy, funding, ex, removed)
        assert got == want
    want_ok = outcome(reference_check, r, st, exposure, market, is_buy, size, price, funding,
                      removed)
    got_ok = outcome(r.check_order, st, exposure, market, is_buy, size, price, funding,
                     removed)
    assert got_ok == want_ok
    assert st == before  # the check never mutates the account
