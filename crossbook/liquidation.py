"""Liquidation math of docs/protocol.md section 9, mirrored from contracts/src/impl/LiquidationModule.sol.

Pure integer arithmetic, no I/O, so a keeper can compute the exact call it will make (size, price,
penalty, resulting balances) before sending it. Every function names the formula of section 9 it
implements; the differential test (tests/integration/test_liquidation_differential.py) proves the
contract and this module agree to the atom.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossbook.fixedpoint import NOTIONAL_DIV, PPM, ceil_div, floor_div
from crossbook.margin import (
    Health,
    MarketConfig,
    Prices,
    RiskParams,
    SubAccount,
    apply_fill_side,
    compute_health_at,
    position_notional,
    position_value,
    requirements,
)

MAX_PENALTY_PPM = 500_000


class NotLiquidatable(ValueError):
    """The contract would revert: the call is not allowed in this state (the message names the error)."""


@dataclass(frozen=True, slots=True)
class LiquidationParams:
    """Section 9.1 parameters, all ppm."""

    penalty_ppm: int = 20_000
    insurance_share_ppm: int = 500_000
    buffer_ppm: int = 100_000
    critical_ppm: int = 500_000

    def validate(self) -> None:
        """Raise ``ValueError`` unless ``setLiquidationParams`` would accept these values."""
        if not 0 <= self.penalty_ppm <= MAX_PENALTY_PPM:
            raise ValueError("penalty_ppm must be in [0, 500_000]")
        for name in ("insurance_share_ppm", "buffer_ppm", "critical_ppm"):
            if not 0 <= getattr(self, name) <= PPM:
                raise ValueError(f"{name} must be in [0, PPM]")

    @property
    def insurance_rate_ppm(self) -> int:
        """``ins = floor(penalty * share / PPM)``: the insurance fund's part, as a fraction of notional."""
        return self.penalty_ppm * self.insurance_share_ppm // PPM

    @property
    def liquidator_rate_ppm(self) -> int:
        """``penalty - ins``: the liquidator's part, delivered through the price."""
        return self.penalty_ppm - self.insurance_rate_ppm


DEFAULT_LIQUIDATION_PARAMS = LiquidationParams()


# ---------------------------------------------------------------------------------------------
# section 9.2: price


def liquidation_price(oracle: int, liquidator_rate_ppm: int, tick: int, target_long: bool) -> int:
    """Oracle moved by the liquidator's rate in its favour, rounded to the tick in its favour.

    A liquidated long is bought: ``floor(floor(p * (PPM - liq) / PPM) / tick) * tick``; a liquidated
    short is sold: ``ceil(ceil(p * (PPM + liq) / PPM) / tick) * tick``.
    """
    if target_long:
        return oracle * (PPM - liquidator_rate_ppm) // PPM // tick * tick
    return ceil_div(ceil_div(oracle * (PPM + liquidator_rate_ppm), PPM), tick) * tick


# ---------------------------------------------------------------------------------------------
# section 9.3: size


@dataclass(frozen=True, slots=True)
class _Target:
    """The inputs of the size rule: target health terms and the liquidated market."""

    size: int
    oracle: int
    price: int
    insurance_rate_ppm: int
    equity: int
    requirement: int
    buffer_ppm: int
    market: MarketConfig

    @property
    def abs_size(self) -> int:
        return abs(self.size)


def _maint_requirement(notional: int, market: MarketConfig) -> int:
    return requirements(notional, market)[1]


def penalty_terms(size_taken: int, oracle: int, price: int, insurance_rate_ppm: int, target_long: bool
                  ) -> tuple[int, int, int]:
    """``(cash, insurance_share, penalty)`` of taking ``size_taken``: ``cash = floor(x * pL / 1e10)``,
    ``ins = floor(floor(x * p / 1e10) * insRate / PPM)``, ``penalty = |N_o - cash| + ins``."""
    cash = size_taken * price // NOTIONAL_DIV
    n_o = size_taken * oracle // NOTIONAL_DIV
    ins = n_o * insurance_rate_ppm // PPM
    return cash, ins, (n_o - cash if target_long else cash - n_o) + ins


def restores(t: _Target, x: int) -> bool:
    """The exact section 9.3 predicate: after taking ``x``, ``H_mm * PPM >= R_mm * buffer``."""
    s1 = t.size - x if t.size > 0 else t.size + x
    cash, ins, _ = penalty_terms(x, t.oracle, t.price, t.insurance_rate_ppm, t.size > 0)
    dq = (cash if t.size > 0 else -cash) - ins
    e1 = t.equity + dq + position_value(s1, t.oracle) - position_value(t.size, t.oracle)
    r1 = (t.requirement - _maint_requirement(position_notional(t.size, t.oracle), t.market)
          + _maint_requirement(position_notional(s1, t.oracle), t.market))
    return (e1 - r1) * PPM >= r1 * t.buffer_ppm


def estimate_size(t: _Target) -> int:
    """Closed-form tier-1 estimate: walk the marginal tiers down from the current notional.

    Per quote atom of notional removed in tier ``i`` the shortfall ``G = R*(PPM+buf) - E*PPM``
    shrinks by ``g_i / PPM`` with ``g_i = mmf_i * (PPM + buf) - lossPpm * PPM``, where
    ``lossPpm = ceil(|p - pL| * PPM / p) + insRate`` bounds the penalty per unit. The shortfall gets a
    rounding slack of ``(2 * tiers + 8) * 2 * PPM``. Returns a lot multiple, or ``|s|`` when a tier
    with ``g_i <= 0`` is reached or the position runs out first.
    """
    m = t.market
    tiers = m.tiers
    n_tiers = len(tiers)
    loss_ppm = ceil_div(abs(t.oracle - t.price) * PPM, t.oracle) + t.insurance_rate_ppm
    pb = PPM + t.buffer_ppm
    need = t.requirement * pb - t.equity * PPM + (2 * n_tiers + 8) * 2 * PPM
    cur = position_notional(t.size, t.oracle)
    i = 0
    while i + 1 < n_tiers and cur > tiers[i].notional_cap:
        i += 1
    dn = 0
    while True:
        g = tiers[i].mmf_ppm * pb - loss_ppm * PPM
        if g <= 0:
            return t.abs_size
        lo = 0 if i == 0 else tiers[i - 1].notional_cap
        seg = cur - lo
        gain = seg * g // PPM
        if gain >= need:
            dn += ceil_div(need * PPM, g)
            break
        if i == 0:
            return t.abs_size
        need -= gain
        dn += seg
        cur = lo
        i -= 1
    x = ceil_div(ceil_div(dn * NOTIONAL_DIV, t.oracle), m.lot_size) * m.lot_size
    return min(x, t.abs_size)


def restoring_size(t: _Target) -> int:
    """Tier 1: the estimate, verified exactly, raised by at most 4 lots, else the whole position."""
    x = estimate_size(t)
    for _ in range(4):
        if x >= t.abs_size:
            return t.abs_size
        if restores(t, x):
            return x
        x += t.market.lot_size
    return t.abs_size


def is_critical(equity: int, maint_requirement: int, params: LiquidationParams) -> bool:
    """Tier 2 applies when ``E * PPM < critical * R_mm``."""
    return equity * PPM < params.critical_ppm * maint_requirement


# ---------------------------------------------------------------------------------------------
# section 9.4: the whole call


@dataclass(frozen=True, slots=True)
class LiquidationQuote:
    """What ``liquidate`` will do: size taken, price, the target's size delta, cash moved between the
    two sides, the insurance share and the total penalty (as in the ``Liquidated`` event)."""

    size: int
    price: int
    size_delta: int
    cash: int
    insurance_share: int
    penalty: int
    critical: bool


def quote_liquidation(
    target: SubAccount,
    risk: RiskParams,
    prices: Prices,
    market_id: int,
    max_size: int,
    params: LiquidationParams = DEFAULT_LIQUIDATION_PARAMS,
    health: Health | None = None,
) -> LiquidationQuote:
    """Size and price of ``liquidate(target, market_id, max_size, ...)`` (price limit not checked).

    Raises :class:`NotLiquidatable` with the contract's error name when it would revert for a reason
    that depends only on the target (``NotLiquidatable``, ``NothingToLiquidate``,
    ``InvalidLiquidationPrice``).
    """
    h = health if health is not None else compute_health_at(target, risk, prices)
    if h.maintenance_health >= 0:
        raise NotLiquidatable("NotLiquidatable")
    pos = target.positions.get(market_id)
    size = pos.size if pos is not None else 0
    if size == 0:
        raise NotLiquidatable("NothingToLiquidate")
    market = risk.markets[market_id]
    oracle = prices.markets[market_id]
    price = liquidation_price(oracle, params.liquidator_rate_ppm, market.tick_size, size > 0)
    if price == 0 or price >= 2**64:
        raise NotLiquidatable("InvalidLiquidationPrice")
    critical = is_critical(h.equity, h.maintenance_requirement, params)
    t = _Target(size, oracle, price, params.insurance_rate_ppm, h.equity, h.maintenance_requirement,
                params.buffer_ppm, market)
    x = t.abs_size if critical else restoring_size(t)
    if max_size < x:
        x = max_size // market.lot_size * market.lot_size
    if x == 0:
        raise NotLiquidatable("NothingToLiquidate")
    cash, ins, penalty = penalty_terms(x, oracle, price, params.insurance_rate_ppm, size > 0)
    return LiquidationQuote(x, price, -x if size > 0 else x, cash, ins, penalty, critical)


def apply_liquidation(
    target: SubAccount, liquidator: SubAccount, market_id: int, q: LiquidationQuote, funding_index: int
) -> tuple[int, int]:
    """Apply a quoted liquidation in place to both accounts (section 9.4: funding first, trade at the
    liquidation price without fees, the target pays the insurance share). Returns the funding each
    side realized (target, liquidator), which moves into the market's funding balance."""
    target_cash = q.cash if q.size_delta > 0 else -q.cash
    liq_realized = apply_fill_side(liquidator, market_id, -q.size_delta, -target_cash, 0, funding_index)
    tgt_realized = apply_fill_side(target, market_id, q.size_delta, target_cash, q.insurance_share, funding_index)
    for acct in (target, liquidator):
        if acct.positions.get(market_id) is not None and acct.positions[market_id].size == 0:
            del acct.positions[market_id]
    return tgt_realized, liq_realized


# ---------------------------------------------------------------------------------------------
# section 9.5: collateral


def collateral_liquidation(
    quote: int, balance: int, oracle: int, decimals: int, max_amount: int, params: LiquidationParams
) -> tuple[int, int, int]:
    """``(amount, price, paid)`` of ``liquidateCollateral``: ``pc = floor(p * (PPM - penalty) / PPM)``,
    ``amount = min(maxAmount, balance, ceil(-quote * unit / pc))``, ``paid = floor(amount * pc / unit)``
    with ``unit = 10**(decimals + 2)``. Raises :class:`NotLiquidatable` like the contract."""
    if quote >= 0 or balance == 0:
        raise NotLiquidatable("NothingToLiquidate")
    pc = oracle * (PPM - params.penalty_ppm) // PPM
    if pc == 0 or pc >= 2**64:
        raise NotLiquidatable("InvalidLiquidationPrice")
    unit = 10 ** (decimals + 2)
    amount = min(ceil_div(-quote * unit, pc), balance, max_amount)
    paid = amount * pc // unit
    if paid == 0 and amount != balance:  # a whole dust balance goes for nothing (bad debt needs it gone)
        raise NotLiquidatable("NothingToLiquidate")
    return amount, pc, paid


# ---------------------------------------------------------------------------------------------
# sections 9.6 and 9.7: bad debt and deleveraging


def bad_debt_split(deficit: int, insurance_fund: int, fee_pool: int) -> tuple[int, int, int]:
    """``(insurancePaid, feePoolPaid, unbacked)``: the fund pays first, then the fee pool, the rest is
    recorded as unbacked debt."""
    ins = min(deficit, insurance_fund)
    fee = min(deficit - ins, fee_pool)
    return ins, fee, deficit - ins - fee


def bankruptcy_price(size: int, oracle: int, equity: int, tick: int) -> int:
    """The price at which closing the whole position brings equity to 0, rounded one tick at most
    against the counterparty: for a long ``ceil_tick(ceil((PV - E) * 1e10 / s))``, for a short
    ``floor_tick(floor((E - PV) * 1e10 / |s|))``."""
    pv = floor_div(size * oracle, NOTIONAL_DIV)
    if size > 0:
        pb = ceil_div(ceil_div((pv - equity) * NOTIONAL_DIV, size), tick) * tick
    else:
        num = equity - pv
        if num <= 0:
            raise NotLiquidatable("InvalidLiquidationPrice")
        pb = num * NOTIONAL_DIV // -size // tick * tick
    if pb == 0 or pb >= 2**64:
        raise NotLiquidatable("InvalidLiquidationPrice")
    return pb
