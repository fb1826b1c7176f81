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
    RiskParams,
    Position,
    SubAccount,
    apply_fill_side,
    compute_health,
    reduces_without_flip,
)
from matcher.risk import Exposure, RiskModel, div_notional, new_exposure

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


# one order check's inputs: account, open exposure, the order, prices and indices (some
# missing), and whether it replaces an open order of its side
ORDER_CASES = dict(
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


def _model(params: RiskParams, mprices: dict[int, int]) -> RiskModel:
    r = RiskModel(params, TAKER, 200)
    r.market_prices.update(mprices)
    r.asset_prices.update({1: 3000 * PRICE, 2: 60_000 * PRICE})
    return r


def _replaced(exposure: Exposure, market: int, is_buy: bool,
              price: int) -> tuple[int, int, int]:
    """An open order of this side being replaced: added to the side's exposure."""
    x = exposure.setdefault(market, [0, 0, 0, 0])
    off = 0 if is_buy else 2
    x[off] += SIZE
    x[off + 1] += SIZE * price
    return (market, SIZE, SIZE * price)


@settings(max_examples=600, deadline=None)
@given(**ORDER_CASES)
def test_fast_worst_case_equals_reference(
    quote: int, collateral: dict[int, int], pos: dict[int, Position], exposure: Exposure,
    market: int, is_buy: bool, size: int, price: int, mprices: dict[int, int],
    funding: dict[int, int], replace: bool,
) -> None:
    r = _model(risk_params(DEFAULT_SPEC), mprices)
    st = SubAccount(quote, collateral, pos)
    removed = _replaced(exposure, market, is_buy, price) if replace else None
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


@settings(max_examples=1500, deadline=None)
@given(
    **ORDER_CASES,
    haircut=hs.sampled_from((0, 200_000, PPM)),
    maker=hs.sampled_from((-100, 0, 200)),
)
def test_health_floor_never_exceeds_worst_case(
    quote: int, collateral: dict[int, int], pos: dict[int, Position], exposure: Exposure,
    market: int, is_buy: bool, size: int, price: int, mprices: dict[int, int],
    funding: dict[int, int], replace: bool, haircut: int, maker: int,
) -> None:
    """The cached pre-trade floor is a lower bound of the exact worst case, so accepting on
    floor >= 0 never accepts what check_order refuses, and a floor exists only where the exact
    pass raises no KeyError. With no exposure and the maker fee it bounds the maker re-check
    (check_fill) the same way."""
    params = risk_params(DEFAULT_SPEC)
    r = _model(RiskParams(params.collaterals, params.markets, haircut), mprices)
    st = SubAccount(quote, collateral, pos)
    removed = _replaced(exposure, market, is_buy, price) if replace else None
    base = r.base_health(st, funding)
    exact = outcome(r.worst_case, st, exposure, is_buy, funding, (market, size, size * price),
                    removed)
    if base is None:
        # no floor: a missing price or index, or a flat position with an open notional
        assert (outcome(r.worst_case, st, {}, True, funding, None) is KeyError
                or any(not p.size and p.open_notional for p in pos.values()))
        return
    assert base == r.worst_case(st, {}, True, funding, None)
    floor = r.health_floor(base, exposure, market, is_buy, size, price, TAKER, funding, removed)
    # the engine's variant, on exposure lists with the leg-cost cache slots: the same value
    # with the cache empty, and again with what the first call cached (a replaced order is
    # in the order's market: the only one floor_cached takes it from)
    lists = {m: list(x) + new_exposure()[4:] for m, x in exposure.items()}
    rs, rp = (removed[1], removed[2]) if removed is not None else (0, 0)
    for _ in range(2):
        assert r.floor_cached(base, lists, market, is_buy, size, size * price, funding, rs,
                              rp, 0) == floor
    if floor is None:
        return
    assert exact is not KeyError
    assert floor <= exact
    if floor >= 0:
        assert r.check_order(st, exposure, market, is_buy, size, price, funding, removed)
    fill_floor = r.health_floor(base, {}, market, is_buy, size, price, maker, funding)
    if fill_floor is not None:
        after = r.check_fill(st, market, is_buy, size, price, maker, funding)
        if after is not None:
            assert fill_floor <= r.health(after, funding)
        else:
            assert fill_floor < 0


def test_health_floor_is_tight_enough_to_skip_the_pass() -> None:
    """A well-funded account's floor clears zero (the engine's fast path), and one that can
    barely afford the order falls back to the exact pass (floor < 0) while the exact check
    still accepts."""
    r = RiskModel(risk_params(DEFAULT_SPEC), TAKER, 200)
    r.market_prices.update({0: 3000 * PRICE, 1: 60_000 * PRICE, 2: 150 * PRICE})
    funding = {0: 0, 1: 0, 2: 0}
    rich = SubAccount(10**14, {}, {})
    base = r.base_health(rich, funding)
    assert base is not None
    floor = r.health_floor(base, {}, 0, True, 10 * SIZE, 3000 * PRICE, TAKER, funding)
    assert floor is not None and 0 <= floor < base
    # the least quote with which the exact worst case of the order is still >= 0
    size = SIZE
    poor = SubAccount(0, {}, {})
    lo, hi = 0, 10**12
    while lo < hi:
        poor.quote = (lo + hi) // 2
        if r.worst_case(poor, {}, True, funding, (0, size, size * 3000 * PRICE)) >= 0:
            hi = poor.quote
        else:
            lo = poor.quote + 1
    poor.quote = lo
    base = r.base_health(poor, funding)
    assert base is not None
    floor = r.health_floor(base, {}, 0, True, size, 3000 * PRICE, TAKER, funding)
    assert floor is not None and floor < 0
    assert r.check_order(poor, {}, 0, True, size, 3000 * PRICE, funding)


@settings(max_examples=2000, deadline=None)
@given(x=hs.integers(-2**200, 2**200) | hs.integers(-10**12, 10**12))
def testdiv_notional_is_floor_division(x: int) -> None:
    assert div_notional(x) == x // NOTIONAL_DIV
