"""The liquidation keeper (async shell around the sans-I/O health scan and liquidation math).

Every new block: read the oracle prices, the insurance fund and the keeper's own sub-account
(one JSON-RPC batch), fold new chain events into the :class:`SubAccountIndex`, scan all
sub-accounts (:mod:`keeper.health_scan`), rank the liquidatable ones by shortfall (most negative
maintenance health first), plan one action per account (:class:`Tiers`), **confirm each with an
eth_call** of exactly the transaction to be sent, and send the confirmed ones with EIP-1559 fees.
Transactions not mined after ``stuck_after_s`` are re-signed with the same nonce and bumped fees.

Tiers (docs/protocol.md section 9), chosen per liquidatable account by :meth:`Tiers.choose`:

1. ``deleverage`` (tier 4) — only when the account has a position, its equity ``E < 0``, the
   insurance fund cannot cover ``-E`` and the keeper key holds ``KEEPER_ROLE``; closes the
   position against the best-ranked profitable counterparty (:func:`rank_counterparties`). With
   no eligible counterparty the keeper falls back to 2.
2. ``liquidate`` (tiers 1-2) — the position with the largest notional, sized and priced exactly
   by :func:`crossbook.liquidation.quote_liquidation` (the restoring size in tier 1, the whole
   position in tier 2); price limit = the quoted price moved by ``slippage_ppm`` in the keeper's
   disfavour. The keeper's own sub-account (``liquidator_subaccount``) must be able to absorb
   the position: the trade is simulated on it and skipped (logged, ``stats.skipped``) unless the
   §3 risk rule (``H_im >= 0`` plus ``absorb_buffer_ppm`` of the requirement, or a strict
   reduction) holds afterwards.
3. ``liquidateCollateral`` — no position left, negative quote and collateral held: the most
   valuable collateral asset is bought at the §9.5 discount (same absorption check).
4. ``settleBadDebt`` (tier 3) — nothing left but a negative quote: the insurance fund, then the
   fee pool, then ``unbackedDebt`` absorb the deficit.

Several keepers may run at once against the same accounts. Losing a race is normal, not an
error: a revert named in :data:`LOST_RACES` (``NotLiquidatable``, ``NothingToLiquidate``, and
for the later tiers ``NoBadDebt`` / ``NotDeleveragable``) in the confirming eth_call, or in a
mined transaction (replayed on the state after its block to learn why), is counted in
``stats.lost_races``; the account is re-read and re-planned at the next block.

Stale prices: a price the oracle adapter refuses is absent from :attr:`Liquidator.market_prices`,
so every account that needs it lands in ``ScanResult.unpriced`` and is never planned (the
contract would revert ``OracleUnavailable`` anyway, invariant 8).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Literal, Sequence

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound

from crossbook.chain.artifacts import load_artifact
from crossbook.chain.errors import ContractRevert, ErrorDecoder
from crossbook.fixedpoint import PPM, ceil_div
from crossbook.liquidation import (
    LiquidationParams, LiquidationQuote, NotLiquidatable, apply_liquidation, collateral_liquidation,
    quote_liquidation,
)
from crossbook.margin import (
    Health, Prices, RiskParams, SubAccount, collateral_value, compute_health_at, position_notional,
    position_value,
)
from keeper.health_scan import HealthBook, ScanResult
from keeper.index import AccountKey, SubAccountIndex, read_accounts

log = logging.getLogger(__name__)

LIQUIDATE_SIG = "liquidate(address,uint32,uint32,uint64,uint64,uint32)"
_LIQUIDATE = keccak(text=LIQUIDATE_SIG)[:4]
_LIQ_COLLATERAL = keccak(text="liquidateCollateral(address,uint32,uint16,uint128,uint64,uint32)")[:4]
_SETTLE_BAD_DEBT = keccak(text="settleBadDebt(address,uint32)")[:4]
_DELEVERAGE = keccak(text="deleverage(address,uint32,uint32,address,uint32,uint64)")[:4]
_PRICE = keccak(text="price(uint16)")[:4]
_LIQ_MODULE = keccak(text="liquidationModule()")[:4]
_LIQ_PARAMS = keccak(text="liquidationParams()")[:4]
_INSURANCE = keccak(text="insuranceFund()")[:4]
_HAS_ROLE = keccak(text="hasRole(bytes32,address)")[:4]
KEEPER_ROLE = keccak(text="KEEPER_ROLE")

# Errors the keeper must decode even if the build output it was started with predates them.
LIQUIDATION_ERRORS_ABI: list[dict[str, Any]] = [
    {"type": "error", "name": n, "inputs": []}
    for n in ("NotLiquidatable", "NothingToLiquidate", "PriceLimit", "LiquidatorUnhealthy", "NoBadDebt",
              "NotDeleveragable", "InvalidCounterparty", "SelfLiquidation", "InvalidLiquidationPrice")
] + [{"type": "error", "name": "OracleUnavailable", "inputs": [{"name": "feedId", "type": "uint16"}]}]
LOST_RACE = "NotLiquidatable"
# Someone else (or a fresher price) got there first: the state no longer allows the action.
LOST_RACES = frozenset({LOST_RACE, "NothingToLiquidate", "NoBadDebt", "NotDeleveragable"})

Kind = Literal["liquidate", "collateral", "bad_debt", "deleverage"]


def liquidation_available(contract_name: str = "Clearinghouse") -> bool:
    """True when the clearinghouse build output has ``liquidate`` (tiers 1-2)."""
    try:
        abi = load_artifact(contract_name).abi
    except FileNotFoundError:
        return False
    return any(i.get("type") == "function" and i.get("name") == "liquidate" for i in abi)


@dataclass(frozen=True)
class LiquidationPlan:
    """One keeper transaction against the target ``(owner, subaccount)``.

    ``kind`` picks the contract function; ``data`` is its exact calldata (what the confirming
    eth_call and the transaction carry). ``market``/``max_size``/``price_limit``/``quote`` are
    set for ``liquidate``; ``asset`` (and ``max_size`` = amount, ``price_limit``) for
    ``collateral``; ``market``, ``max_size`` and ``counterparty`` for ``deleverage``.
    ``liquidator_after`` is the keeper's own sub-account as simulated after the action (None
    when the action does not touch it).
    """

    owner: str
    subaccount: int
    shortfall: int  # -maintenance health, quote atoms (ranking key)
    kind: Kind
    data: bytes
    market: int = -1
    asset: int = -1
    max_size: int = 0
    price_limit: int = 0
    quote: LiquidationQuote | None = None
    counterparty: AccountKey | None = None
    liquidator_after: SubAccount | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> AccountKey:
        """The target sub-account."""
        return (self.owner, self.subaccount)

    @property
    def touched(self) -> list[AccountKey]:
        """Sub-accounts whose state this action changes (re-read once it is mined)."""
        return [self.key] + ([self.counterparty] if self.counterparty else [])


def liquidate_calldata(owner: str, subaccount: int, market: int, max_size: int, price_limit: int,
                       liquidator_subaccount: int) -> bytes:
    """ABI calldata of ``liquidate(owner, subaccount, market, maxSize, priceLimit, liqSub)``."""
    return _LIQUIDATE + abi_encode(
        ["address", "uint32", "uint32", "uint64", "uint64", "uint32"],
        [owner, subaccount, market, max_size, price_limit, liquidator_subaccount])


# ---------------------------------------------------------------------------------------------
# planning (pure: no I/O)


@dataclass
class PlanContext:
    """Everything a planner needs besides the target: risk parameters, oracle inputs, the §9.1
    parameters, the keeper's own sub-account and what it may do."""

    params: RiskParams
    prices: Prices
    liq_params: LiquidationParams
    slippage_ppm: int
    liquidator_key: AccountKey
    liquidator: SubAccount | None  # None: not read (no deposit yet) -> cannot absorb anything
    insurance_fund: int
    keeper_role: bool
    book: HealthBook | None = None  # every known account, for counterparty ranking
    absorb_buffer_ppm: int = 0


def can_absorb(before: SubAccount, after: SubAccount, market: int | None, ctx: PlanContext) -> bool:
    """The §3 risk rule the contract applies to the liquidator after the action, plus the
    keeper's own ``absorb_buffer_ppm`` of headroom: ``H_im >= ceil(R_im * buffer / PPM)``, or the
    position in ``market`` strictly shrinks without flipping and ``H_im`` does not fall."""
    try:
        h1 = compute_health_at(after, ctx.params, ctx.prices)
    except KeyError:  # it holds something the oracle cannot price now: the contract would revert
        return False
    if h1.initial_health >= ceil_div(h1.initial_requirement * ctx.absorb_buffer_ppm, PPM):
        return True
    if market is None:
        return False
    s0 = before.positions[market].size if market in before.positions else 0
    s1 = after.positions[market].size if market in after.positions else 0
    if s0 == 0 or abs(s1) >= abs(s0) or (s1 != 0 and (s1 > 0) != (s0 > 0)):
        return False
    try:
        h0 = compute_health_at(before, ctx.params, ctx.prices)
    except KeyError:
        return False
    return h1.initial_health >= h0.initial_health


def _largest_position(acct: SubAccount, prices: Prices) -> int | None:
    """Market of the position with the largest notional (ties: lowest market id)."""
    best: tuple[int, int] | None = None
    for m in sorted(acct.positions):
        pos = acct.positions[m]
        p = prices.markets.get(m)
        if pos.size and p:
            n = position_notional(pos.size, p)
            if best is None or n > best[0]:
                best = (n, m)
    return None if best is None else best[1]


def plan_liquidation(key: AccountKey, acct: SubAccount, health: Health, ctx: PlanContext) -> LiquidationPlan | None:
    """Tiers 1-2: ``liquidate`` the largest position with the exact quote of
    :func:`crossbook.liquidation.quote_liquidation` (size = the quoted size, so the call takes
    exactly what the contract computes). The price limit is the quoted price moved by
    ``slippage_ppm`` against the keeper (a long target is bought: a ceiling, rounded up; a short
    is sold: a floor, rounded down), so an oracle move between plan and inclusion within that
    band still executes. None when there is no position or the keeper cannot absorb it."""
    market = _largest_position(acct, ctx.prices)
    if market is None:
        return None
    try:
        q = quote_liquidation(acct, ctx.params, ctx.prices, market, 2**64 - 1, ctx.liq_params, health)
    except NotLiquidatable as why:
        log.info("no liquidation of %s/%d: %s", key[0], key[1], why)
        return None
    if q.size_delta < 0:  # target long: the keeper buys
        limit = min(ceil_div(q.price * (PPM + ctx.slippage_ppm), PPM), 2**64 - 1)
    else:
        limit = q.price * (PPM - ctx.slippage_ppm) // PPM
    if ctx.liquidator is None:
        log.warning("skip %s/%d: keeper sub-account %s has no funds", key[0], key[1], ctx.liquidator_key)
        return None
    after = ctx.liquidator.copy()
    apply_liquidation(acct.copy(), after, market, q, ctx.prices.funding.get(market, 0))
    if not can_absorb(ctx.liquidator, after, market, ctx):
        log.warning("skip %s/%d: keeper sub-account %s cannot absorb %d of market %d",
                    key[0], key[1], ctx.liquidator_key, q.size, market)
        return None
    data = liquidate_calldata(key[0], key[1], market, q.size, limit, ctx.liquidator_key[1])
    return LiquidationPlan(key[0], key[1], -health.maintenance_health, "liquidate", data, market=market,
                           max_size=q.size, price_limit=limit, quote=q, liquidator_after=after)


def plan_collateral(key: AccountKey, acct: SubAccount, health: Health, ctx: PlanContext) -> LiquidationPlan | None:
    """§9.5: buy the most valuable collateral asset of a target with negative quote at
    ``floor(p * (PPM - penalty) / PPM)``, just enough to bring its quote to zero."""
    if acct.quote >= 0:
        return None
    best: tuple[int, int] | None = None
    for a in sorted(acct.collateral):
        amount, p = acct.collateral[a], ctx.prices.assets.get(a)
        if amount and p:
            v = collateral_value(amount, p, ctx.params.collaterals[a])
            if best is None or v > best[0]:
                best = (v, a)
    if best is None:
        return None
    asset = best[1]
    cfg = ctx.params.collaterals[asset]
    try:
        amount, pc, paid = collateral_liquidation(acct.quote, acct.collateral[asset], ctx.prices.assets[asset],
                                                  cfg.token_decimals, 2**128 - 1, ctx.liq_params)
    except NotLiquidatable as why:
        log.info("no collateral liquidation of %s/%d: %s", key[0], key[1], why)
        return None
    if ctx.liquidator is None:
        return None
    after = ctx.liquidator.copy()
    after.quote -= paid
    after.collateral[asset] = after.collateral.get(asset, 0) + amount
    if not can_absorb(ctx.liquidator, after, None, ctx):
        log.warning("skip %s/%d: keeper sub-account cannot buy %d of asset %d", key[0], key[1], amount, asset)
        return None
    limit = min(ceil_div(pc * (PPM + ctx.slippage_ppm), PPM), 2**64 - 1)  # the keeper buys: a ceiling
    data = _LIQ_COLLATERAL + abi_encode(["address", "uint32", "uint16", "uint128", "uint64", "uint32"],
                                        [key[0], key[1], asset, amount, limit, ctx.liquidator_key[1]])
    return LiquidationPlan(key[0], key[1], -health.maintenance_health, "collateral", data, asset=asset,
                           max_size=amount, price_limit=limit, liquidator_after=after)


def plan_bad_debt(key: AccountKey, acct: SubAccount, health: Health, ctx: PlanContext) -> LiquidationPlan | None:
    """§9.6: nothing left but a negative quote -> ``settleBadDebt`` (permissionless)."""
    if acct.quote >= 0 or any(p.size for p in acct.positions.values()) or any(acct.collateral.values()):
        return None
    data = _SETTLE_BAD_DEBT + abi_encode(["address", "uint32"], [key[0], key[1]])
    return LiquidationPlan(key[0], key[1], -health.maintenance_health, "bad_debt", data)


def rank_counterparties(book: HealthBook, market: int, target_long: bool, ctx: PlanContext,
                        exclude: AccountKey) -> list[tuple[AccountKey, int]]:
    """Deleveraging counterparties for a position in ``market``, best first, with their sizes.

    Eligible (as the contract checks): an opposite position with unrealized profit
    ``U = floor_div(s_c * p, 1e10) - open_notional_c > 0``. Ranking (docs/protocol.md §9.7, "most
    profitable x most leveraged first"): ``score = (U / E) * (N / E) = U * N / E**2`` with ``E``
    the counterparty's equity and ``N`` its notional in the market, compared exactly as a
    :class:`fractions.Fraction` (no floats). Counterparties with ``E <= 0`` (infinitely
    leveraged) come first, by ``U * N``. Ties break by checksummed owner, then sub-account, so
    every keeper computes the same order.
    """
    p = ctx.prices.markets[market]
    ranked: list[tuple[tuple[int, Fraction, str, int], AccountKey, int]] = []
    for row, acct in enumerate(book.accounts[: len(book)]):
        key = book.keys[row]
        if not isinstance(key, tuple) or key == exclude:
            continue
        pos = acct.positions.get(market)
        if pos is None or pos.size == 0 or (pos.size > 0) == target_long:
            continue
        upnl = position_value(pos.size, p) - pos.open_notional
        if upnl <= 0:
            continue
        try:
            e = compute_health_at(acct, ctx.params, ctx.prices).equity
        except KeyError:
            continue
        n = position_notional(pos.size, p)
        owner, sub = str(key[0]), int(key[1])
        if e <= 0:
            rank = (0, -Fraction(upnl * n), owner, sub)
        else:
            rank = (1, -Fraction(upnl * n, e * e), owner, sub)
        ranked.append((rank, (owner, sub), abs(pos.size)))
    ranked.sort(key=lambda r: r[0])
    return [(k, s) for _, k, s in ranked]


def plan_deleverage(key: AccountKey, acct: SubAccount, health: Health, ctx: PlanContext) -> LiquidationPlan | None:
    """§9.7 (KEEPER_ROLE only): ``E < 0`` and the insurance fund cannot cover ``-E`` -> close
    ``min(|s|, |s_c|)`` of the largest position against the best-ranked counterparty at the
    bankruptcy price. None when not allowed or nobody is eligible."""
    if not ctx.keeper_role or ctx.book is None or health.equity >= 0 or ctx.insurance_fund >= -health.equity:
        return None
    market = _largest_position(acct, ctx.prices)
    if market is None:
        return None
    s = acct.positions[market].size
    ranked = rank_counterparties(ctx.book, market, s > 0, ctx, key)
    if not ranked:
        log.warning("no deleveraging counterparty for %s/%d in market %d", key[0], key[1], market)
        return None
    cp, cp_size = ranked[0]
    size = min(abs(s), cp_size, 2**64 - 1)
    data = _DELEVERAGE + abi_encode(["address", "uint32", "uint32", "address", "uint32", "uint64"],
                                    [key[0], key[1], market, cp[0], cp[1], size])
    return LiquidationPlan(key[0], key[1], -health.maintenance_health, "deleverage", data, market=market,
                           max_size=size, counterparty=cp)


Planner = Callable[[AccountKey, SubAccount, Health, PlanContext], "LiquidationPlan | None"]


@dataclass
class Tiers:
    """Pluggable per-tier planners (each a pure function, swappable in tests or by operators)
    and the order they are tried in (:meth:`choose`)."""

    plan: Planner = plan_liquidation
    collateral: Planner = plan_collateral
    bad_debt: Planner = plan_bad_debt
    deleverage: Planner = plan_deleverage

    def choose(self, key: AccountKey, acct: SubAccount, health: Health, ctx: PlanContext) -> LiquidationPlan | None:
        """Positions first (deleverage when the fund cannot cover negative equity and the
        keeper may, else liquidate), then collateral against a negative quote, then bad debt."""
        if any(p.size for p in acct.positions.values()):
            return self.deleverage(key, acct, health, ctx) or self.plan(key, acct, health, ctx)
        if acct.quote < 0 and any(acct.collateral.values()):
            return self.collateral(key, acct, health, ctx)
        return self.bad_debt(key, acct, health, ctx)


# ---------------------------------------------------------------------------------------------
# the async shell


@dataclass
class LiquidatorConfig:
    """Tuning knobs."""

    liquidator_subaccount: int = 0  # the keeper's own sub-account that takes positions over
    max_per_block: int = 8
    slippage_ppm: int = 20_000
    absorb_buffer_ppm: int = 0  # headroom the keeper keeps above H_im >= 0 after absorbing
    priority_fee_wei: int = 2 * 10**9
    max_fee_cap_wei: int = 500 * 10**9
    fee_bump_ppm: int = 1_250_000  # nodes need >= +10% to accept a same-nonce replacement
    stuck_after_s: float = 3.0
    gas_limit: int = 1_500_000
    poll_interval_s: float = 0.02
    send: bool = True  # False: scan, rank and confirm only (dry run)


@dataclass
class _InFlight:
    plan: LiquidationPlan
    nonce: int
    data: bytes
    max_fee: int
    tip: int
    sent_at: float
    hashes: list[bytes] = field(default_factory=list)


@dataclass
class LiquidatorStats:
    """Counters, for tests, logs and metrics."""

    scans: int = 0
    candidates: int = 0
    confirmed: int = 0
    sent: int = 0
    mined_ok: int = 0
    lost_races: int = 0
    skipped: int = 0  # liquidatable but nothing the keeper can do now (cannot absorb, no tier)
    errors: int = 0
    bumps: int = 0
    last_scan_ms: float = 0.0
    sent_at: list[float] = field(default_factory=list)  # wall time of every send (react time)
    sent_kinds: dict[str, int] = field(default_factory=dict)


class Liquidator:
    """One keeper: key, its own sub-account, index and oracle."""

    def __init__(self, w3: AsyncWeb3, index: SubAccountIndex, oracle: str, key: str | bytes,
                 config: LiquidatorConfig | None = None, tiers: Tiers | None = None,
                 errors: ErrorDecoder | None = None) -> None:
        self.w3 = w3
        self.index = index
        self.params = index.params
        self.oracle = to_checksum_address(oracle)
        self.account = Account.from_key(key)
        self.address = self.account.address
        self.cfg = config or LiquidatorConfig()
        self.tiers = tiers or Tiers()
        self.errors = errors or ErrorDecoder([LIQUIDATION_ERRORS_ABI, *_known_abis()])
        # decided on the first tick: the function must be in the ABI *and* wired on-chain
        self.has_liquidate: bool | None = None
        self.keeper_role = False
        self.liq_params = LiquidationParams()
        self.stats = LiquidatorStats()
        self.in_flight: dict[AccountKey, _InFlight] = {}
        self.last_block = -1
        self.asset_prices: dict[int, int] = {}
        self.market_prices: dict[int, int] = {}
        self.unpriced_markets: list[int] = []  # markets whose oracle price is refused (stale)
        self.insurance_fund = 0
        self.own: SubAccount | None = None
        self._nonce: int | None = None
        self._chain_id = 0
        self._fee_cache: tuple[int, int, int] | None = None  # (block, max fee, tip)
        self._stop = asyncio.Event()

    @property
    def own_key(self) -> AccountKey:
        """The keeper's own sub-account (it receives liquidated positions)."""
        return (self.address, self.cfg.liquidator_subaccount)

    # --- chain reads ------------------------------------------------------------------------
    async def read_prices(self) -> None:
        """Oracle prices of every market and collateral feed, the insurance fund and the
        keeper's own sub-account in one batch (an unavailable price is absent)."""
        feeds = {cfg.feed_id for cfg in self.params.markets.values()}
        feeds |= {cfg.feed_id for a, cfg in self.params.collaterals.items() if a != 0}
        order = sorted(feeds)
        calls = [(self.oracle, _PRICE + abi_encode(["uint16"], [f])) for f in order]
        calls.append((self.index.contract, _INSURANCE))
        res, own = await asyncio.gather(
            self.index.rpc.eth_calls(calls),
            read_accounts(self.index.rpc, self.index.contract, [self.own_key], self.index.assets, self.index.markets))
        by_feed = {f: int.from_bytes(r[-32:], "big") for f, r in zip(order, res) if r}
        self.market_prices = {m: by_feed[c.feed_id] for m, c in self.params.markets.items() if c.feed_id in by_feed}
        self.asset_prices = {a: by_feed[c.feed_id] for a, c in self.params.collaterals.items()
                             if a != 0 and c.feed_id in by_feed}
        # said once per change: without it a keeper that stops liquidating on a stale feed is
        # silent (every scan just finds those accounts unpriced)
        unpriced = sorted(m for m in self.params.markets if m not in self.market_prices)
        if unpriced != self.unpriced_markets:
            if unpriced:
                log.warning("oracle price unavailable (stale or missing) for market id(s) %s: accounts "
                            "holding them are not liquidated until it is fresh (the contract would "
                            "revert OracleUnavailable)", unpriced)
            else:
                log.info("oracle prices available again for every market")
            self.unpriced_markets = unpriced
        if res[-1]:
            self.insurance_fund = int.from_bytes(res[-1][-32:], "big")
        acct = own[self.own_key]
        funded = acct.quote or acct.collateral or acct.positions
        self.own = acct if funded else None

    def _decode(self, err: ContractLogicError) -> ContractRevert:
        data = err.data if isinstance(err.data, str) else None
        if data and data.startswith("0x"):
            return self.errors.decode(bytes.fromhex(data[2:]))
        return ContractRevert(str(err.message or err), (), b"")

    async def _call(self, data: bytes, to: str | None = None, block: int | Literal["latest"] = "latest"
                    ) -> tuple[bytes | None, ContractRevert | None]:
        try:
            out = await self.w3.eth.call({"from": self.address, "to": to or self.index.contract, "data": data,
                                          "gas": self.cfg.gas_limit}, block)
            return bytes(out), None
        except ContractLogicError as err:
            return None, self._decode(err)

    async def detect_liquidation(self) -> bool:
        """``liquidate`` usable: in the build output and a liquidation module set on-chain
        (before that every liquidation call reverts ``LiquidationModuleLocked``). Also reads the
        §9.1 parameters and whether this key holds ``KEEPER_ROLE``."""
        if not liquidation_available():
            return False
        out, rev = await self._call(_LIQ_MODULE)
        if rev is not None or out is None or int.from_bytes(out[-32:], "big") == 0:
            return False
        out, rev = await self._call(_LIQ_PARAMS)
        if rev is None and out is not None:
            pen, share, buf, crit = abi_decode(["uint32"] * 4, out[:128])
            self.liq_params = LiquidationParams(pen, share, buf, crit)
        out, rev = await self._call(_HAS_ROLE + abi_encode(["bytes32", "address"], [KEEPER_ROLE, self.address]))
        self.keeper_role = rev is None and out is not None and int.from_bytes(out[-32:], "big") == 1
        return True

    # --- one step ---------------------------------------------------------------------------
    def context(self) -> PlanContext:
        """The planners' inputs at the prices last read."""
        return PlanContext(
            params=self.params,
            prices=Prices(self.asset_prices, self.market_prices, dict(self.index.book.funding)),
            liq_params=self.liq_params, slippage_ppm=self.cfg.slippage_ppm, liquidator_key=self.own_key,
            liquidator=self.own.copy() if self.own is not None else None, insurance_fund=self.insurance_fund,
            keeper_role=self.keeper_role, book=self.index.book, absorb_buffer_ppm=self.cfg.absorb_buffer_ppm)

    def rank(self, scan: ScanResult, ctx: PlanContext | None = None) -> list[LiquidationPlan]:
        """One plan per liquidatable account (not in flight, not the keeper's own), largest
        shortfall first. The keeper's simulated sub-account carries over from one plan to the
        next, so the plans of one block are jointly absorbable."""
        ctx = ctx or self.context()
        plans = []
        book = self.index.book
        for row in scan.liquidatable:
            key = self.index.key_of(row)
            if key in self.in_flight or key == self.own_key:
                continue
            plan = self.tiers.choose(key, book.accounts[row], scan.exact[row], ctx)
            if plan is None:
                self.stats.skipped += 1
                continue
            if plan.liquidator_after is not None:
                ctx.liquidator = plan.liquidator_after
            plans.append(plan)
            if len(plans) >= self.cfg.max_per_block:
                break
        return plans

    async def confirm(self, plan: LiquidationPlan) -> bool:
        """eth_call the exact transaction. A revert in :data:`LOST_RACES` is a lost race (someone
        was faster, or a fresher price); the account is re-read at the next sync."""
        _, rev = await self._call(plan.data)
        if rev is None:
            return True
        for k in plan.touched:
            self.index.dirty.add(k)
        if rev.name in LOST_RACES:
            self.stats.lost_races += 1
            log.info("lost race on %s/%d (confirm, %s)", plan.owner, plan.subaccount, rev.name)
        else:
            self.stats.errors += 1
            log.warning("%s of %s/%d would revert: %s", plan.kind, plan.owner, plan.subaccount, rev)
        return False

    async def tick(self) -> list[LiquidationPlan]:
        """Prices, events, scan, rank, confirm, send. Returns the confirmed plans."""
        if self.has_liquidate is None:
            self.has_liquidate = await self.detect_liquidation()
        await asyncio.gather(self.read_prices(), self.index.sync())
        t0 = time.perf_counter()
        scan = self.index.book.scan(self.asset_prices, self.market_prices)
        self.stats.last_scan_ms = (time.perf_counter() - t0) * 1000
        self.stats.scans += 1
        if not self.has_liquidate:
            return []
        plans = self.rank(scan)
        self.stats.candidates += len(plans)
        oks = await asyncio.gather(*(self.confirm(p) for p in plans))
        confirmed = [p for p, ok in zip(plans, oks) if ok]
        self.stats.confirmed += len(confirmed)
        if self.cfg.send:
            for p in confirmed:
                await self._send(p)
        return confirmed

    # --- sending ----------------------------------------------------------------------------
    async def _fees(self) -> tuple[int, int]:
        blk = await self.w3.eth.get_block("latest")
        num = int(blk.get("number", 0) or 0)
        if self._fee_cache is None or self._fee_cache[0] != num:
            base = int(blk.get("baseFeePerGas", 0) or 0)
            tip = self.cfg.priority_fee_wei
            self._fee_cache = (num, min(2 * base + tip, self.cfg.max_fee_cap_wei), tip)
        return self._fee_cache[1], self._fee_cache[2]

    def _sign(self, tx: _InFlight) -> bytes:
        signed = self.account.sign_transaction({
            "type": 2, "chainId": self._chain_id, "nonce": tx.nonce, "to": self.index.contract,
            "data": tx.data, "gas": self.cfg.gas_limit, "maxFeePerGas": tx.max_fee,
            "maxPriorityFeePerGas": tx.tip, "value": 0})
        return bytes(signed.raw_transaction)

    async def _send(self, plan: LiquidationPlan) -> None:
        if not self._chain_id:
            self._chain_id = await self.w3.eth.chain_id
        if self._nonce is None:
            self._nonce = await self.w3.eth.get_transaction_count(self.address, "pending")
        max_fee, tip = await self._fees()
        tx = _InFlight(plan, self._nonce, plan.data, max_fee, tip, time.monotonic())
        try:
            tx.hashes.append(bytes(await self.w3.eth.send_raw_transaction(self._sign(tx))))
        except Exception as err:  # noqa: BLE001 - usually a stale nonce: resync next time
            self._nonce = None
            self.stats.errors += 1
            log.warning("send failed for %s: %s", plan.key, err)
            return
        self.stats.sent_at.append(time.time())
        self._nonce += 1
        self.in_flight[plan.key] = tx
        self.stats.sent += 1
        self.stats.sent_kinds[plan.kind] = self.stats.sent_kinds.get(plan.kind, 0) + 1

    async def _bump(self, tx: _InFlight) -> None:
        """Same nonce, fees raised by ``fee_bump_ppm`` (capped)."""
        tx.max_fee = min(tx.max_fee * self.cfg.fee_bump_ppm // PPM + 1, self.cfg.max_fee_cap_wei)
        tx.tip = min(tx.tip * self.cfg.fee_bump_ppm // PPM + 1, tx.max_fee)
        tx.sent_at = time.monotonic()
        try:
            tx.hashes.append(bytes(await self.w3.eth.send_raw_transaction(self._sign(tx))))
            self.stats.bumps += 1
        except Exception as err:  # noqa: BLE001 - e.g. nonce too low: an earlier version was mined
            log.info("replacement of nonce %d not accepted: %s", tx.nonce, err)

    async def check_in_flight(self) -> int:
        """Resolve mined actions; bump stuck ones; classify reverts (lost race or error).
        Returns how many were resolved."""
        resolved = 0
        for key, tx in list(self.in_flight.items()):
            receipt = None
            for h in reversed(tx.hashes):
                try:
                    receipt = await self.w3.eth.get_transaction_receipt(h)  # type: ignore[arg-type]
                    break
                except TransactionNotFound:
                    continue
            if receipt is None:
                if time.monotonic() - tx.sent_at > self.cfg.stuck_after_s:
                    await self._bump(tx)
                continue
            del self.in_flight[key]
            resolved += 1
            # Events the index does not decode (deleverage, collateral, bad debt) and our own
            # sub-account change here: re-read them rather than wait for the sweep.
            for k in (*tx.plan.touched, self.own_key):
                self.index.dirty.add(k)
            if receipt["status"] == 1:
                self.stats.mined_ok += 1
                # the one line an operator reading the keeper's log needs: what it liquidated
                log.info("%s of %s/%d mined in block %d (tx 0x%s)", tx.plan.kind, tx.plan.owner,
                         tx.plan.subaccount, int(receipt["blockNumber"]), bytes(receipt["transactionHash"]).hex())
                continue
            # Replay on the state *after* its block: a competitor earlier in the same block is
            # the usual reason, and it is only visible there.
            _, rev = await self._call(tx.data, block=int(receipt["blockNumber"]))
            if rev is None:
                rev = ContractRevert("Unknown", (), b"")  # e.g. out of gas
            if rev.name in LOST_RACES:
                self.stats.lost_races += 1
                log.info("lost race on %s (mined, %s)", key, rev.name)
            else:
                self.stats.errors += 1
                log.warning("%s of %s reverted: %s", tx.plan.kind, key, rev)
        return resolved

    async def step(self) -> None:
        """One poll: tick if a new block arrived, then resolve in-flight transactions, and
        tick again if any resolved."""
        block = await self.w3.eth.block_number
        if block != self.last_block:
            self.last_block = block
            await self.tick()
        # The tick skipped accounts still in flight; one whose action is mined by now may need
        # its next step (bad debt after a liquidation), and on a quiet chain no new block would
        # come to prompt it.
        if self.in_flight and await self.check_in_flight():
            await self.tick()

    async def run(self) -> None:
        """Tick on every new block until :meth:`stop` (polls ``eth_blockNumber`` every
        ``poll_interval_s``; on a local node that is cheaper than a subscription round trip)."""
        await self.index.load_funding()
        await self.index.sweep()
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception as err:  # noqa: BLE001 - keep liquidating through node hiccups
                self.stats.errors += 1
                log.warning("keeper step failed: %s", err)
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.poll_interval_s)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """Make :meth:`run` return."""
        self._stop.set()


def _known_abis() -> Sequence[list[dict[str, Any]]]:
    """ABIs of the deployed contracts (for decoding every other custom error)."""
    out = []
    for name in ("Clearinghouse", "OracleAdapter"):
        try:
            out.append(load_artifact(name).abi)
        except FileNotFoundError:
            continue
    return out


__all__ = [
    "KEEPER_ROLE", "LOST_RACE", "LOST_RACES", "LiquidationPlan", "Liquidator", "LiquidatorConfig",
    "LiquidatorStats", "PlanContext", "Tiers", "can_absorb", "liquidate_calldata", "liquidation_available",
    "plan_bad_debt", "plan_collateral", "plan_deleverage", "plan_liquidation", "rank_counterparties",
]
