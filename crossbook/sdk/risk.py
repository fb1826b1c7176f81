"""Account risk figures for bots, the dashboard and ``crossbook account``: health summary,
leverage and per-position liquidation prices. Integer math on top of
:func:`crossbook.margin.compute_health`.

Liquidation price of a position: the price of its market's oracle feed at which the sub-account's
maintenance health crosses below 0. Everything that feed prices moves with it (a collateral asset
on the same feed too: WETH collateral falls with ETH, as it does in reality); every other price
and the funding indices are held fixed.

- long: the **highest** price ``p`` with ``H_mm(p) < 0``; at every price above it the account is
  not liquidatable (as far as this feed goes).
- short: the **lowest** such price; at every price below it the account is safe.

``None`` when no price in ``[1, 2**64 - 1]`` makes the account liquidatable. When it is already
liquidatable at the current price the result is still the boundary (above the current price for
a long, below it for a short).

Why a search and not a closed form: ``H_mm`` is piecewise linear in the price with tiered
requirements and floor/ceil roundings. For a long ``PV = floor(s*p/D)`` and ``N = ceil(s*p/D)``
differ by one except where ``s*p`` is a multiple of ``D``, so ``H_mm`` can be one atom higher at
those isolated exact prices than at their neighbours; a collateral balance on the feed only adds
a non-decreasing term. So for a long the liquidatable set is a prefix with isolated holes: the
predicate ``Q(p) = H(p) < 0 or H(p+1) < 0`` closes the holes (they are never adjacent unless every
price is exact, in which case there are none) and is monotone, and a binary search finds the
boundary exactly. For a short with no collateral on its feed ``H_mm`` is non-increasing in ``p``:
exact as well.

A short that holds collateral on its own feed (short ETH against WETH) is the one case where
health is not monotone: the position loses as the price rises, the collateral as it falls, and
the tiered requirement makes health concave in the price (up to the roundings), so the account
can be liquidated by a rise (the short outweighs) or by a fall (the collateral does), or both.
By concavity the liquidatable prices above the current one are an upper set and those below a
lower set: each side's boundary is found by bisection from the current price.
:func:`liquidation_bounds` gives both (``crossbook account`` and the dashboard show both);
:func:`liquidation_price` the one nearer to the current price (the current price itself when
the account is liquidatable there already). Tests check every case against ``compute_health``
at and around the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import Health, Prices, RiskParams, SubAccount, compute_health

MAX_PRICE = 2**64 - 1


def feed_assets(params: RiskParams, market: int) -> tuple[int, ...]:
    """The collateral assets priced by ``market``'s oracle feed (they move with it)."""
    feed = params.markets[market].feed_id
    return tuple(sorted(a for a, c in params.collaterals.items() if c.feed_id == feed))


def _feed_markets(params: RiskParams, market: int) -> tuple[int, ...]:
    """The markets priced by ``market``'s oracle feed (``market`` itself among them)."""
    feed = params.markets[market].feed_id
    return tuple(m for m, c in params.markets.items() if c.feed_id == feed)


def _with_price(prices: Prices, markets: tuple[int, ...], assets: tuple[int, ...],
                price: int) -> Prices:
    """``prices`` with ``markets`` and ``assets`` at ``price``."""
    moved = dict(prices.markets)
    for m in markets:
        moved[m] = price
    held = dict(prices.assets)
    for a in assets:
        held[a] = price
    return Prices(assets=held, markets=moved, funding=prices.funding)


def at_feed_price(params: RiskParams, prices: Prices, market: int, price: int) -> Prices:
    """``prices`` with ``market``'s feed at ``price``: every market and collateral asset on
    that feed."""
    return _with_price(prices, _feed_markets(params, market), feed_assets(params, market), price)


def liquidation_price(account: SubAccount, params: RiskParams, prices: Prices,
                      market: int) -> int | None:
    """The liquidation price (1e8) of the position in ``market`` (see the module docstring);
    ``None`` for no position or when no price liquidates the account. Of the two
    :func:`liquidation_bounds` of a short holding collateral on its feed, the nearer one."""
    pos = account.positions.get(market)
    if pos is None or pos.size == 0:
        return None
    return _nearer(pos.size, liquidation_bounds(account, params, prices, market),
                   prices.markets.get(market))


def _nearer(size: int, bounds: tuple[int | None, int | None], now: int | None) -> int | None:
    """The one liquidation price of a position of ``size`` with these bounds: a long's lower
    one, a short's upper one, or of two the nearer to ``now`` (the upper one on a tie)."""
    down, up = bounds
    if size > 0 or up is None:
        return down
    if down is None or now is None:
        return up
    return down if now - down < up - now else up


def liquidation_bounds(account: SubAccount, params: RiskParams, prices: Prices,
                       market: int) -> tuple[int | None, int | None]:
    """``(down, up)``: the liquidation prices of the position in ``market`` on each side. The
    account is liquidatable at ``down`` and at every price below it, and at ``up`` and every
    price above it (as far as the position's feed goes); None where no price on that side
    liquidates it. A long has only ``down``, a short only ``up``, except a short holding
    collateral on its own feed, whose health is concave in the price (module docstring): it can
    have both. When such a short is liquidatable at the current price already, both are the
    current price."""
    pos = account.positions.get(market)
    if pos is None or pos.size == 0:
        return None, None

    # what the feed prices, looked up once for the whole search
    on_feed = _feed_markets(params, market)
    assets = feed_assets(params, market)

    def liq(p: int) -> bool:
        at = _with_price(prices, on_feed, assets, p)
        return compute_health(account, params, at.assets, at.markets,
                              at.funding).maintenance_health < 0

    if pos.size < 0:
        if any(account.collateral.get(a) for a in assets):
            return _hedged_short(liq, prices.markets[market])
        # non-increasing in p: the lowest liquidatable price
        if not liq(MAX_PRICE):
            return None, None
        return None, 1 if liq(1) else _first(liq, 1, MAX_PRICE)

    def q(p: int) -> bool:
        return liq(p) or (p < MAX_PRICE and liq(p + 1))

    if not q(1):
        return None, None
    if q(MAX_PRICE):
        return MAX_PRICE, None
    # the first p with not q(p): p and p + 1 are safe, so p - 1 is the last liquidatable price
    return _first(lambda p: not q(p), 1, MAX_PRICE) - 1, None


def _first(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """The smallest ``p`` in ``(lo, hi]`` with ``pred(p)``, for ``pred`` false at ``lo``, true at
    ``hi`` and monotone between (bisection)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _hedged_short(liq: Callable[[int], bool], now: int) -> tuple[int | None, int | None]:
    """:func:`liquidation_bounds` of a short holding collateral on its own feed: health is
    concave in the price, so the liquidatable prices below ``now`` are a lower set and those
    above it an upper set; each side's boundary is found by bisection from ``now``."""
    if liq(now):
        return now, now
    down = _first(lambda p: not liq(p), 1, now) - 1 if now > 1 and liq(1) else None
    up = _first(liq, now, MAX_PRICE) if now < MAX_PRICE and liq(MAX_PRICE) else None
    return down, up


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
    # (down, up): liquidation_bounds, both sides for a short hedged by collateral on its feed
    liquidation_bounds: tuple[int | None, int | None] = (None, None)


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
        bounds = liquidation_bounds(account, params, prices, m)
        rows.append(PositionRisk(m, pos.size, pos.open_notional, px, notional,
                                 pv - pos.open_notional, _nearer(pos.size, bounds, px), bounds))
    leverage = total * PPM // h.equity if h.equity > 0 else None
    return AccountRisk(h, account.quote, dict(account.collateral), total, leverage,
                       h.maintenance_health < 0, tuple(rows))


def account_report(client: Any, owner: str, sub: int) -> dict[str, Any]:
    """Everything ``crossbook account`` shows, as integers in protocol units. While an oracle
    price the account needs is refused (reduce-only mode), what needs it is None and
    ``unpriced`` names it; balances and positions are still there."""
    from crossbook.chain.errors import ContractRevert
    from crossbook.config import risk_params
    from crossbook.fixedpoint import NOTIONAL_DIV
    from crossbook.margin import compute_health_at, position_notional, position_value

    spec = client.spec
    params = risk_params(spec)
    acct = client.subaccount(owner, sub)
    prices = client.available_prices()
    unpriced = [spec.markets[m].symbol for m, p in sorted(acct.positions.items())
                if p.size and m not in prices.markets]
    unpriced += [spec.collaterals[a - 1].symbol for a, amt in sorted(acct.collateral.items())
                 if amt and a not in prices.assets]
    h = None if unpriced else compute_health_at(acct, params, prices)
    try:
        chain_h = client.health(owner, sub)
    except ContractRevert:  # OracleUnavailable: the contract needs the same prices
        chain_h = None
    positions = []
    for m, p in sorted(acct.positions.items()):
        px = prices.markets.get(m)
        try:
            bounds = liquidation_bounds(acct, params, prices, m)
        except KeyError:  # another price the account needs is refused
            bounds = (None, None)
        positions.append({
            "market": m, "symbol": spec.markets[m].symbol, "size": p.size, "open_notional": p.open_notional,
            "entry_price": abs(p.open_notional) * NOTIONAL_DIV // abs(p.size) if p.size else 0,
            "oracle_price": px, "notional": None if px is None else position_notional(p.size, px),
            "unrealized_pnl": None if px is None else position_value(p.size, px) - p.open_notional,
            "liquidation_price": _nearer(p.size, bounds, px),
            # both sides, for a short holding collateral on its feed (liquidation_bounds)
            "liquidation_down": bounds[0], "liquidation_up": bounds[1],
        })
    notional = None if h is None else sum(x["notional"] for x in positions)
    return {
        "owner": owner, "subaccount": sub, "quote": acct.quote,
        "collateral": {spec.collaterals[a - 1].symbol: amt for a, amt in sorted(acct.collateral.items())},
        "unpriced": unpriced,
        "equity": None if h is None else h.equity,
        "initial_health": None if h is None else h.initial_health,
        "maintenance_health": None if h is None else h.maintenance_health,
        "initial_requirement": None if h is None else h.initial_requirement,
        "maintenance_requirement": None if h is None else h.maintenance_requirement,
        "notional": notional,
        # leverage in hundredths (integer math): total notional / equity
        "leverage_x100": notional * 100 // h.equity if h is not None and notional is not None
        and h.equity > 0 else None,
        "liquidatable": None if h is None else h.maintenance_health < 0,
        "chain_health_agrees": None if h is None or chain_h is None
        else (chain_h.equity, chain_h.initial_health, chain_h.maintenance_health)
        == (h.equity, h.initial_health, h.maintenance_health),
        "positions": positions,
    }
