"""The exchange's listing: oracle feeds, collateral assets and perp markets, in protocol units.

One definition feeds the deploy script (on-chain config) and the Python risk engine, so the two
can never disagree about a parameter. Units follow docs/protocol.md (prices and sizes 1e8,
quote amounts in 6-decimal atoms, fractions in ppm).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from crossbook.margin import CollateralConfig, MarketConfig, RiskParams, Tier

USD = 10**6  # one quote unit in atoms
PRICE = 10**8  # price scale
SIZE = 10**8  # size scale


@dataclass(frozen=True)
class FeedSpec:
    """A Chainlink-style USD price feed for one asset."""

    feed_id: int
    symbol: str
    initial_price: int  # 1e8 scale
    heartbeat_s: int = 3600
    min_price: int = 1
    max_price: int = 10**8 * 10**8
    decimals: int = 8


@dataclass(frozen=True)
class CollateralSpec:
    """A non-quote collateral token: valued at its feed times a haircut weight."""

    symbol: str
    decimals: int
    feed_id: int
    weight_init_ppm: int
    weight_maint_ppm: int
    deposit_cap: int  # token atoms, total over all sub-accounts


@dataclass(frozen=True)
class TierSpec:
    """Marginal margin tier: fractions apply to the notional slice up to `notional_cap`."""

    notional_cap: int  # quote atoms; ignored (unbounded) for the last tier
    imf_ppm: int
    mmf_ppm: int


@dataclass(frozen=True)
class MarketSpec:
    """A perpetual market."""

    symbol: str
    feed_id: int
    tick_size: int
    lot_size: int
    open_interest_cap: int  # total long size, 1e8 scale
    max_funding_ppm: int
    tiers: tuple[TierSpec, ...]
    # seconds per funding interval: on-chain, FUNDING items move the index by at most max_funding_ppm per
    # period on average (docs/protocol.md "Funding"); the funding service posts one rate per interval
    funding_period_s: int = 3600


@dataclass(frozen=True)
class ExchangeSpec:
    """Everything listed on one clearinghouse deployment."""

    quote_symbol: str
    feeds: tuple[FeedSpec, ...]
    collaterals: tuple[CollateralSpec, ...]  # asset ids 1.. in this order (0 is the quote)
    markets: tuple[MarketSpec, ...]  # market ids 0.. in this order
    pnl_haircut_ppm: int
    escape_delay_s: int
    fee_ppm_taker: int = 500
    fee_ppm_maker: int = 200
    feed_by_symbol: dict[str, FeedSpec] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.feed_by_symbol.update({f.symbol: f for f in self.feeds})

    def market_id(self, symbol: str) -> int:
        """Market id of a symbol such as 'ETH-PERP'."""
        for i, m in enumerate(self.markets):
            if m.symbol == symbol:
                return i
        raise KeyError(symbol)

    def asset_id(self, symbol: str) -> int:
        """Asset id of a collateral symbol; the quote asset is 0."""
        if symbol == self.quote_symbol:
            return 0
        for i, c in enumerate(self.collaterals):
            if c.symbol == symbol:
                return i + 1
        raise KeyError(symbol)


UNBOUNDED_CAP = 2**128 - 1  # the last tier's cap is ignored on-chain; this keeps caps increasing


def _tiers(*rows: tuple[int, int, int]) -> tuple[TierSpec, ...]:
    """Tiers from (cap in whole USD, imf, mmf); a cap of 0 marks the unbounded last tier."""
    return tuple(TierSpec(cap * USD if cap else UNBOUNDED_CAP, imf, mmf) for cap, imf, mmf in rows)


DEFAULT_SPEC = ExchangeSpec(
    quote_symbol="USDC",
    feeds=(
        FeedSpec(0, "ETH", 3_000 * PRICE, min_price=10 * PRICE, max_price=1_000_000 * PRICE),
        FeedSpec(1, "BTC", 60_000 * PRICE, min_price=100 * PRICE, max_price=10_000_000 * PRICE),
        FeedSpec(2, "SOL", 150 * PRICE, min_price=PRICE // 10, max_price=100_000 * PRICE),
    ),
    collaterals=(
        CollateralSpec("WETH", 18, 0, 800_000, 900_000, 1_000_000 * 10**18),
        CollateralSpec("WBTC", 8, 1, 850_000, 920_000, 100_000 * 10**8),
    ),
    markets=(
        MarketSpec("ETH-PERP", 0, PRICE // 100, SIZE // 1000, 100_000 * SIZE, 1_000,
                   _tiers((1_000_000, 50_000, 30_000), (5_000_000, 100_000, 60_000), (0, 200_000, 120_000))),
        MarketSpec("BTC-PERP", 1, PRICE // 10, SIZE // 10_000, 5_000 * SIZE, 1_000,
                   _tiers((2_000_000, 40_000, 25_000), (10_000_000, 80_000, 50_000), (0, 160_000, 100_000))),
        MarketSpec("SOL-PERP", 2, PRICE // 1000, SIZE // 100, 2_000_000 * SIZE, 2_000,
                   _tiers((500_000, 100_000, 50_000), (0, 200_000, 100_000))),
    ),
    pnl_haircut_ppm=200_000,
    escape_delay_s=24 * 3600,
)


def risk_params(spec: ExchangeSpec = DEFAULT_SPEC) -> RiskParams:
    """The margin engine's view of a listing (the same numbers the deploy script lists on-chain)."""
    return RiskParams(
        collaterals={
            i + 1: CollateralConfig(c.decimals, c.feed_id, c.weight_init_ppm, c.weight_maint_ppm, c.deposit_cap)
            for i, c in enumerate(spec.collaterals)
        },
        markets={
            i: MarketConfig(m.feed_id, m.tick_size, m.lot_size, m.open_interest_cap, m.max_funding_ppm,
                            tuple(Tier(t.notional_cap, t.imf_ppm, t.mmf_ppm) for t in m.tiers))
            for i, m in enumerate(spec.markets)
        },
        pnl_haircut_ppm=spec.pnl_haircut_ppm,
    )
