"""Cross-margin model of docs/protocol.md section 3: health, trades, funding.

Pure integer arithmetic, no I/O. The matcher calls :func:`compute_health` on every order and
the keeper on every account, so the hot functions inline their rounding instead of calling the
helpers in :mod:`crossbook.fixedpoint` (same semantics: ``a // b`` is floor, ``-((-a) // b)``
is ceil, for positive ``b``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Final, Literal, Mapping

from crossbook.fixedpoint import (
    MAX_COLLATERAL_ASSETS,
    MAX_MARKETS,
    MAX_TIERS,
    NOTIONAL_DIV,
    PPM,
    QUOTE_ASSET,
    QUOTE_DECIMALS,
    UINT256_MAX,
    ceil_div,
    floor_div,
    trunc_div,
)


class ConfigError(ValueError):
    """A market, collateral or risk configuration breaks the contract's config rules."""


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True, slots=True)
class Tier:
    """One marginal margin bracket: fractions apply to the notional between the previous cap
    and ``notional_cap`` (quote atoms). The last tier's cap is treated as unbounded."""

    notional_cap: int
    imf_ppm: int
    mmf_ppm: int


# A band is (lower bound, width, imf, mmf); the last band's width reaches 2**256-1 like the
# contract's unbounded cap, so the hot loop needs no special case for it.
_Band = tuple[int, int, int, int]


def _bands_of(tiers: tuple[Tier, ...]) -> tuple[_Band, ...]:
    bands: list[_Band] = []
    lo = 0
    last = len(tiers) - 1
    for i, tier in enumerate(tiers):
        hi = UINT256_MAX if i == last else tier.notional_cap
        bands.append((lo, hi - lo, tier.imf_ppm, tier.mmf_ppm))
        lo = hi
    return tuple(bands)


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """A perp market: feed, tick/lot grid (1e8 units), open-interest cap (size units),
    funding clamp (ppm) and margin tiers."""

    feed_id: int
    tick_size: int
    lot_size: int
    open_interest_cap: int
    max_funding_ppm: int
    tiers: tuple[Tier, ...]
    bands: tuple[_Band, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # tiers may arrive as a list from config loaders; freeze them so bands stay in sync
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "bands", _bands_of(self.tiers))

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless the market obeys the contract's config rules."""
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ConfigError("tick_size and lot_size must be positive")
        if self.open_interest_cap < 0:
            raise ConfigError("open_interest_cap must be >= 0")
        if not 0 <= self.max_funding_ppm <= PPM:
            raise ConfigError("max_funding_ppm must be in [0, PPM]")
        if not 1 <= len(self.tiers) <= MAX_TIERS:
            raise ConfigError(f"a market needs 1..{MAX_TIERS} tiers")
        prev_cap, prev_imf, prev_mmf = 0, 0, 0
        last = len(self.tiers) - 1
        for i, tier in enumerate(self.tiers):
            if not 0 < tier.mmf_ppm <= tier.imf_ppm <= PPM:
                raise ConfigError(f"tier {i}: need 0 < mmf <= imf <= PPM")
            if tier.imf_ppm < prev_imf or tier.mmf_ppm < prev_mmf:
                raise ConfigError(f"tier {i}: fractions must not decrease across tiers")
            # the last cap is unbounded whatever is configured, so only the others must increase
            if i < last and not prev_cap < tier.notional_cap <= UINT256_MAX:
                raise ConfigError(f"tier {i}: caps must be strictly increasing and positive")
            prev_cap, prev_imf, prev_mmf = tier.notional_cap, tier.imf_ppm, tier.mmf_ppm


@dataclass(frozen=True, slots=True)
class CollateralConfig:
    """A collateral token: decimals, price feed, initial/maintenance weights (ppm), cap."""

    token_decimals: int
    feed_id: int
    weight_init_ppm: int
    weight_maint_ppm: int
    deposit_cap: int
    value_div: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # amount (10**decimals) * price (1e8) -> quote atoms (1e6)
        object.__setattr__(self, "value_div", 10 ** (self.token_decimals + 2))

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless weights obey ``0 <= init <= maint <= PPM``."""
        if not 0 <= self.token_decimals <= 77:
            raise ConfigError("token_decimals out of range")
        if not 0 <= self.weight_init_ppm <= self.weight_maint_ppm <= PPM:
            raise ConfigError("need 0 <= weight_init <= weight_maint <= PPM")
        if self.deposit_cap < 0:
            raise ConfigError("deposit_cap must be >= 0")


@dataclass(frozen=True, slots=True)
class RiskParams:
    """Everything the margin formula needs besides prices: collaterals by asset id (ids >= 1
    are margin collateral; an entry for asset 0 only describes the quote token), markets by
    market id, and the unrealized-PnL haircut for initial equity."""

    collaterals: Mapping[int, CollateralConfig]
    markets: Mapping[int, MarketConfig]
    pnl_haircut_ppm: int

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless every config and id obeys the contract's rules."""
        if not 0 <= self.pnl_haircut_ppm <= PPM:
            raise ConfigError("pnl_haircut_ppm must be in [0, PPM]")
        for asset, cfg in self.collaterals.items():
            if not 0 <= asset < MAX_COLLATERAL_ASSETS:
                raise ConfigError(f"asset id {asset} out of range")
            cfg.validate()
            if asset == QUOTE_ASSET and (
                cfg.token_decimals != QUOTE_DECIMALS or cfg.weight_init_ppm != PPM
            ):
                raise ConfigError("asset 0 is the 6-decimal quote token with weight 1")
        for market, mcfg in self.markets.items():
            if not 0 <= market < MAX_MARKETS:
                raise ConfigError(f"market id {market} out of range")
            mcfg.validate()


# ---------------------------------------------------------------------------------------------
# state


@dataclass(slots=True)
class Position:
    """A perp position: signed size (1e8), signed quote cost basis, funding index at last
    settlement."""

    size: int = 0
    open_notional: int = 0
    funding_snapshot: int = 0

    def copy(self) -> Position:
        """Return an independent copy."""
        return Position(self.size, self.open_notional, self.funding_snapshot)


@dataclass(slots=True)
class SubAccount:
    """One margined sub-account: quote balance (may be negative), collateral by asset id
    (ids >= 1) and positions by market id."""

    quote: int = 0
    collateral: dict[int, int] = field(default_factory=dict)
    positions: dict[int, Position] = field(default_factory=dict)

    def copy(self) -> SubAccount:
        """Return a deep copy cheap enough for a what-if check on every order."""
        return SubAccount(
            self.quote,
            dict(self.collateral),
            {m: Position(p.size, p.open_notional, p.funding_snapshot)
             for m, p in self.positions.items()},
        )


@dataclass(frozen=True, slots=True)
class Prices:
    """Oracle inputs: collateral prices by asset id (1e8; asset 0 needs none), market prices
    by market id (1e8) and cumulative funding indices by market id (1e8)."""

    assets: Mapping[int, int]
    markets: Mapping[int, int]
    funding: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class Health:
    """Same fields as the contract's ``Health`` struct (all quote atoms)."""

    equity: int
    initial_equity: int
    initial_requirement: int
    maintenance_requirement: int
    initial_health: int
    maintenance_health: int


def _health_builder() -> Callable[[int, int, int, int, int, int], Health]:
    """A Health constructor that skips the frozen dataclass ``__init__``: that one goes through
    ``object.__setattr__`` per field and costs ~1.2 us, a quarter of a whole health check.
    Writing the slots through their descriptors gives an equal, still-frozen object."""
    setters = tuple(getattr(Health, f.name).__set__ for f in fields(Health))
    s0, s1, s2, s3, s4, s5 = setters
    new = object.__new__

    def build(e: int, e_im: int, r_im: int, r_mm: int, h_im: int, h_mm: int) -> Health:
        h = new(Health)
        s0(h, e)
        s1(h, e_im)
        s2(h, r_im)
        s3(h, r_mm)
        s4(h, h_im)
        s5(h, h_mm)
        return h

    return build


_make_health: Final = _health_builder()


# ---------------------------------------------------------------------------------------------
# per-term formulas (reference versions; compute_health inlines the same arithmetic)


def collateral_value(amount: int, price: int, cfg: CollateralConfig) -> int:
    """``V_a = floor_div(amount * price, 10**(decimals + 2))`` in quote atoms, unweighted."""
    return floor_div(amount * price, cfg.value_div)


def weighted_value(value: int, weight_ppm: int) -> int:
    """``W_a^k = floor_div(V_a * weight, PPM)``."""
    return floor_div(value * weight_ppm, PPM)


def position_value(size: int, price: int) -> int:
    """Signed mark value ``PV = floor_div(size * price, NOTIONAL_DIV)``."""
    return floor_div(size * price, NOTIONAL_DIV)


def position_notional(size: int, price: int) -> int:
    """Unsigned notional ``N = ceil_div(|size| * price, NOTIONAL_DIV)``."""
    return ceil_div(abs(size) * price, NOTIONAL_DIV)


def accrued_funding(size: int, funding_index: int, snapshot: int) -> int:
    """Funding owed since the snapshot, ``ceil_div(size * (F - snapshot), NOTIONAL_DIV)``;
    negative means receivable. Rounding up favours the system on both sides."""
    return ceil_div(size * (funding_index - snapshot), NOTIONAL_DIV)


def requirement(notional: int, tiers: tuple[Tier, ...], which: Literal["init", "maint"]) -> int:
    """Marginal tiered requirement: sum over tiers of ``ceil_div(portion_i * frac_i, PPM)``."""
    total = 0
    use_init = which == "init"
    for lo, width, imf, mmf in _bands_of(tiers):
        portion = min(max(notional - lo, 0), width)
        total += ceil_div(portion * (imf if use_init else mmf), PPM)
    return total


def requirements(notional: int, market: MarketConfig) -> tuple[int, int]:
    """``(R^init, R^maint)`` for one notional, using the market's precomputed bands."""
    req_i = req_m = 0
    for lo, width, imf, mmf in market.bands:
        portion = notional - lo
        if portion <= 0:
            break  # bands are ascending: nothing above contributes either
        if portion > width:
            portion = width
        req_i -= (-portion * imf) // PPM
        req_m -= (-portion * mmf) // PPM
    return req_i, req_m


# ---------------------------------------------------------------------------------------------
# health


def compute_health(
    account: SubAccount,
    params: RiskParams,
    asset_prices: Mapping[int, int],
    market_prices: Mapping[int, int],
    funding_indices: Mapping[int, int],
) -> Health:
    """Health of one sub-account per docs/protocol.md section 3.

    Zero collateral amounts and zero-size positions are skipped, so their prices need not be
    present. Raises ``KeyError`` when a needed price, index or config is missing.
    """
    w_init = w_maint = 0
    collaterals = params.collaterals
    for asset, amount in account.collateral.items():
        if amount:
            cfg = collaterals[asset]
            value = amount * asset_prices[asset] // cfg.value_div
            w_init += value * cfg.weight_init_ppm // PPM
            w_maint += value * cfg.weight_maint_ppm // PPM

    pos_total = 0  # sum PV - sum A
    upnl_gain = 0  # sum max(U, 0)
    req_i = req_m = 0
    markets = params.markets
    for market_id, pos in account.positions.items():
        size = pos.size
        if not size:
            continue
        price = market_prices[market_id]
        pv = size * price // NOTIONAL_DIV
        owed = -((size * (pos.funding_snapshot - funding_indices[market_id])) // NOTIONAL_DIV)
        pos_total += pv - owed
        gain = pv - pos.open_notional
        if gain > 0:
            upnl_gain += gain
        notional = -((-(size if size > 0 else -size) * price) // NOTIONAL_DIV)
        for lo, width, imf, mmf in markets[market_id].bands:
            portion = notional - lo
            if portion <= 0:
                break
            if portion > width:
                portion = width
            req_i -= (-portion * imf) // PPM
            req_m -= (-portion * mmf) // PPM

    base = account.quote + pos_total
    equity = base + w_maint
    initial_equity = base + w_init + ((-upnl_gain * params.pnl_haircut_ppm) // PPM)
    return _make_health(
        equity, initial_equity, req_i, req_m, initial_equity - req_i, equity - req_m
    )


def compute_health_at(account: SubAccount, params: RiskParams, prices: Prices) -> Health:
    """:func:`compute_health` with the oracle inputs bundled in a :class:`Prices`."""
    return compute_health(account, params, prices.assets, prices.markets, prices.funding)


def is_liquidatable(health: Health) -> bool:
    """A sub-account is liquidatable iff maintenance health is negative."""
    return health.maintenance_health < 0


# ---------------------------------------------------------------------------------------------
# trades


def fill_cash(size: int, price: int) -> int:
    """Unsigned quote paid for a fill, ``floor_div(size * price, NOTIONAL_DIV)``."""
    return floor_div(size * price, NOTIONAL_DIV)


def fee_amount(cash: int, fee_ppm: int) -> int:
    """Fee on a fill's unsigned cash, ``floor_div(cash * fee_ppm, PPM)``."""
    return floor_div(cash * fee_ppm, PPM)


def side_delta(is_buy: bool, fill_size: int, cash: int) -> tuple[int, int]:
    """``(delta, signed_cash)`` of one side: the buyer gets ``+size`` and pays ``cash``."""
    return (fill_size, cash) if is_buy else (-fill_size, -cash)


def apply_fill_side(
    account: SubAccount,
    market_id: int,
    delta: int,
    cash_signed: int,
    fee: int,
    funding_index: int,
) -> int:
    """Apply one side of a fill in place (section 3 "Applying a trade", steps 1-4).

    Returns the funding realized into ``quote`` (positive: the account paid it), which the
    caller moves into the market's funding settlement balance.
    """
    if delta == 0:
        raise ValueError("a fill side needs a non-zero delta")
    pos = account.positions.get(market_id)
    if pos is None:
        pos = account.positions[market_id] = Position(0, 0, funding_index)
    s = pos.size
    realized = ceil_div(s * (funding_index - pos.funding_snapshot), NOTIONAL_DIV)
    pos.funding_snapshot = funding_index
    account.quote -= realized + cash_signed + fee
    pos.open_notional = next_open_notional(s, delta, pos.open_notional, cash_signed)
    pos.size = s + delta
    return realized


def next_open_notional(size: int, delta: int, open_notional: int, cash_signed: int) -> int:
    """Step 3 of "Applying a trade": the cost basis after adding ``delta`` at ``cash_signed``."""
    new_size = size + delta
    if new_size == 0:
        return 0
    if size == 0 or (size > 0) == (delta > 0):
        return open_notional + cash_signed
    if abs(delta) <= abs(size):
        return trunc_div(open_notional * new_size, size)
    return trunc_div(cash_signed * new_size, delta)


def reduces_without_flip(size_before: int, size_after: int) -> bool:
    """``|after| < |before|`` and ``after`` is zero or keeps the sign of ``before``; the
    reduce-only rule and the first half of "strictly reduces risk"."""
    if size_before > 0:
        return 0 <= size_after < size_before
    if size_before < 0:
        return size_before < size_after <= 0
    return False


def strictly_reduces_risk(
    size_before: int, size_after: int, health_before: Health, health_after: Health
) -> bool:
    """Section 3 risk rule exemption for a fill side: the position shrinks without flipping
    and initial health does not fall."""
    return (
        reduces_without_flip(size_before, size_after)
        and health_after.initial_health >= health_before.initial_health
    )


def check_fill_side(
    size_before: int, size_after: int, health_before: Health, health_after: Health
) -> bool:
    """True when a fill side is acceptable: ``H_im >= 0`` after, or it strictly reduces risk."""
    return health_after.initial_health >= 0 or strictly_reduces_risk(
        size_before, size_after, health_before, health_after
    )


def check_fill_side_unpriced(size_before: int, size_after: int, health_after: Health) -> bool:
    """Reduce-only mode's rule for a fill side in a market without an oracle price
    (docs/protocol.md §9.8): the position shrinks without flipping, and the account stays
    solvent at the fill price: maintenance health after the fill, the market valued at the fill
    price (``health_after``), is >= 0."""
    return (
        reduces_without_flip(size_before, size_after)
        and health_after.maintenance_health >= 0
    )


def check_withdrawal(health_after: Health) -> bool:
    """Withdrawals and transfers never count as risk-reducing: ``H_im >= 0`` after."""
    return health_after.initial_health >= 0


@dataclass(frozen=True, slots=True)
class SideOutcome:
    """Result of a what-if fill side: the account after, both healths, and whether accepted."""

    accepted: bool
    account_after: SubAccount
    health_before: Health
    health_after: Health
    realized_funding: int


def simulate_fill_side(
    account: SubAccount,
    params: RiskParams,
    prices: Prices,
    market_id: int,
    delta: int,
    cash_signed: int,
    fee: int,
) -> SideOutcome:
    """Apply a fill side to a copy of ``account`` and run the risk rule; ``account`` is left
    untouched."""
    before = compute_health_at(account, params, prices)
    after_account = account.copy()
    pos = after_account.positions.get(market_id)
    size_before = pos.size if pos is not None else 0
    realized = apply_fill_side(
        after_account, market_id, delta, cash_signed, fee, prices.funding[market_id]
    )
    after = compute_health_at(after_account, params, prices)
    accepted = check_fill_side(size_before, size_before + delta, before, after)
    return SideOutcome(accepted, after_account, before, after, realized)


def simulate_fill_side_unpriced(
    account: SubAccount,
    params: RiskParams,
    prices: Prices,
    market_id: int,
    fill_price: int,
    delta: int,
    cash_signed: int,
    fee: int,
) -> SideOutcome:
    """:func:`simulate_fill_side` for a fill in a market whose oracle price is unavailable
    (reduce-only mode, docs/protocol.md §9.8): the market is valued at ``fill_price``
    (``prices.markets`` need not hold it, every other price the account needs must be there:
    KeyError otherwise) and the rule is :func:`check_fill_side_unpriced`."""
    at_fill = Prices(prices.assets, {**prices.markets, market_id: fill_price}, prices.funding)
    out = simulate_fill_side(account, params, at_fill, market_id, delta, cash_signed, fee)
    pos = account.positions.get(market_id)
    size_before = pos.size if pos is not None else 0
    return replace(out, accepted=check_fill_side_unpriced(size_before, size_before + delta,
                                                          out.health_after))


# ---------------------------------------------------------------------------------------------
# funding


def clamp_funding_rate(rate_ppm: int, max_funding_ppm: int) -> int:
    """Clamp a posted rate to ``[-max_funding_ppm, +max_funding_ppm]``."""
    if rate_ppm > max_funding_ppm:
        return max_funding_ppm
    if rate_ppm < -max_funding_ppm:
        return -max_funding_ppm
    return rate_ppm


def apply_funding_rate(cumulative: int, rate_ppm: int, max_funding_ppm: int, price: int) -> int:
    """New cumulative index ``F + trunc_div(clamp(rate) * price, PPM)``."""
    return cumulative + trunc_div(clamp_funding_rate(rate_ppm, max_funding_ppm) * price, PPM)
