"""The liquidation keeper (async shell around the sans-I/O health scan).

Every new block: read the oracle prices (one JSON-RPC batch), fold new chain events into the
:class:`SubAccountIndex`, scan all sub-accounts (:mod:`keeper.health_scan`), rank the
liquidatable ones by shortfall (most negative maintenance health first), plan a liquidation for
the top ones, **confirm each with an eth_call** of exactly the transaction to be sent, and send
the confirmed ones with EIP-1559 fees. Transactions not mined after ``stuck_after_s`` are
re-signed with the same nonce and bumped fees.

Several keepers may run at once against the same accounts. Losing a race is normal, not an
error: a ``NotLiquidatable`` revert in the confirming eth_call, or a mined transaction that
reverted with ``NotLiquidatable`` (replayed to learn why), is counted in
``stats.lost_races`` and the account is simply dropped until the next scan.

Tier hooks (one small function each, see :class:`Tiers`): ``plan`` (partial/full liquidation
size and price limit; uses ``crossbook.liquidation`` when it exists), and later
``liquidate_collateral``, ``settle_bad_debt`` and ``deleverage`` once the contract has them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound

from crossbook.chain.artifacts import load_artifact
from crossbook.chain.errors import ContractRevert, ErrorDecoder
from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import Health, RiskParams, SubAccount
from keeper.health_scan import ScanResult
from keeper.index import AccountKey, SubAccountIndex

log = logging.getLogger(__name__)

LIQUIDATE_SIG = "liquidate(address,uint32,uint32,uint64,uint64,uint32)"
_LIQUIDATE = keccak(text=LIQUIDATE_SIG)[:4]
_IS_LIQ = keccak(text="isLiquidatable(address,uint32)")[:4]
_PRICE = keccak(text="price(uint16)")[:4]
_LIQ_MODULE = keccak(text="liquidationModule()")[:4]

# The liquidation errors, known before they land in the build output.
LIQUIDATION_ERRORS_ABI: list[dict[str, Any]] = [
    {"type": "error", "name": "NotLiquidatable", "inputs": []},
    {"type": "error", "name": "PriceLimit", "inputs": []},
    {"type": "error", "name": "LiquidatorUnhealthy", "inputs": []},
    {"type": "error", "name": "OracleUnavailable", "inputs": [{"name": "feedId", "type": "uint16"}]},
]
LOST_RACE = "NotLiquidatable"


def liquidation_available(contract_name: str = "Clearinghouse") -> bool:
    """True once the clearinghouse build output has ``liquidate`` (the on-chain tier 1-2)."""
    try:
        abi = load_artifact(contract_name).abi
    except FileNotFoundError:
        return False
    return any(i.get("type") == "function" and i.get("name") == "liquidate" for i in abi)


@dataclass(frozen=True)
class LiquidationPlan:
    """One ``liquidate`` call: take up to ``max_size`` of ``market`` from the target."""

    owner: str
    subaccount: int
    market: int
    max_size: int
    price_limit: int
    shortfall: int  # -maintenance health, quote atoms (ranking key)

    @property
    def key(self) -> AccountKey:
        """The target sub-account."""
        return (self.owner, self.subaccount)


def liquidate_calldata(plan: LiquidationPlan, liquidator_subaccount: int) -> bytes:
    """ABI calldata of ``liquidate(owner, subaccount, market, maxSize, priceLimit, liqSub)``."""
    return _LIQUIDATE + abi_encode(
        ["address", "uint32", "uint32", "uint64", "uint64", "uint32"],
        [plan.owner, plan.subaccount, plan.market, plan.max_size, plan.price_limit, liquidator_subaccount])


def plan_liquidation(key: AccountKey, account: SubAccount, health: Health, params: RiskParams,
                     market_prices: Mapping[int, int], slippage_ppm: int) -> LiquidationPlan | None:
    """Tier 1-2 plan: the position with the largest notional, whole (the contract caps a
    partial liquidation itself; ``crossbook.liquidation.partial_size`` refines this once it
    exists). Price limit: the liquidator takes over the position, so for a long target it buys
    (limit = oracle + slippage, the most it pays) and for a short it sells (oracle - slippage).
    """
    best: tuple[int, int, int] | None = None
    for m, pos in account.positions.items():
        p = market_prices.get(m)
        if pos.size and p:
            notional = abs(pos.size) * p // NOTIONAL_DIV
            if best is None or notional > best[0]:
                best = (notional, m, pos.size)
    if best is None:
        return None  # no position: collateral / bad-debt tiers (not on-chain yet)
    _, market, size = best
    price = market_prices[market]
    max_size = abs(size)
    try:  # the Python mirror of the contract's partial-size rule, when it lands
        from crossbook import liquidation as _liq  # type: ignore[attr-defined]

        max_size = int(_liq.partial_size(account, params, market, price))
    except (ImportError, AttributeError):
        pass
    limit = price * (PPM + slippage_ppm) // PPM if size > 0 else price * (PPM - slippage_ppm) // PPM
    return LiquidationPlan(key[0], key[1], market, min(max_size, 2**64 - 1), min(limit, 2**64 - 1),
                           -health.maintenance_health)


@dataclass
class Tiers:
    """Pluggable per-tier planners. ``plan`` is tier 1-2 (``liquidate``); the others return
    calldata for ``liquidateCollateral`` / ``settleBadDebt`` / ``deleverage`` once those exist
    (None: tier not available or not applicable)."""

    plan: Callable[[AccountKey, SubAccount, Health, RiskParams, Mapping[int, int], int],
                   LiquidationPlan | None] = plan_liquidation
    collateral: Callable[[AccountKey, SubAccount, Health], bytes | None] = lambda k, a, h: None
    bad_debt: Callable[[AccountKey, SubAccount, Health], bytes | None] = lambda k, a, h: None
    deleverage: Callable[[AccountKey, SubAccount, Health], bytes | None] = lambda k, a, h: None


@dataclass
class LiquidatorConfig:
    """Tuning knobs."""

    liquidator_subaccount: int = 0
    max_per_block: int = 8
    slippage_ppm: int = 20_000
    priority_fee_wei: int = 2 * 10**9
    max_fee_cap_wei: int = 500 * 10**9
    fee_bump_ppm: int = 1_250_000  # nodes need >= +10% to accept a same-nonce replacement
    stuck_after_s: float = 3.0
    gas_limit: int = 800_000
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
    errors: int = 0
    bumps: int = 0
    last_scan_ms: float = 0.0
    sent_at: list[float] = field(default_factory=list)  # wall time of every send (react time)


class Liquidator:
    """One keeper: key, liquidator sub-account, index and oracle."""

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
        self.stats = LiquidatorStats()
        self.in_flight: dict[AccountKey, _InFlight] = {}
        self.last_block = -1
        self.asset_prices: dict[int, int] = {}
        self.market_prices: dict[int, int] = {}
        self._nonce: int | None = None
        self._chain_id = 0
        self._stop = asyncio.Event()

    # --- chain reads ------------------------------------------------------------------------
    async def read_prices(self) -> None:
        """Oracle prices of every market and collateral feed in one batch (unavailable: absent)."""
        feeds = {cfg.feed_id for cfg in self.params.markets.values()}
        feeds |= {cfg.feed_id for a, cfg in self.params.collaterals.items() if a != 0}
        order = sorted(feeds)
        res = await self.index.rpc.eth_calls([(self.oracle, _PRICE + abi_encode(["uint16"], [f])) for f in order])
        by_feed = {f: int.from_bytes(r[-32:], "big") for f, r in zip(order, res) if r}
        self.market_prices = {m: by_feed[c.feed_id] for m, c in self.params.markets.items() if c.feed_id in by_feed}
        self.asset_prices = {a: by_feed[c.feed_id] for a, c in self.params.collaterals.items()
                             if a != 0 and c.feed_id in by_feed}

    def _decode(self, err: ContractLogicError) -> ContractRevert:
        data = err.data if isinstance(err.data, str) else None
        if data and data.startswith("0x"):
            return self.errors.decode(bytes.fromhex(data[2:]))
        return ContractRevert(str(err.message or err), (), b"")

    async def _call(self, data: bytes, to: str | None = None) -> tuple[bytes | None, ContractRevert | None]:
        try:
            out = await self.w3.eth.call({"from": self.address, "to": to or self.index.contract, "data": data})
            return bytes(out), None
        except ContractLogicError as err:
            return None, self._decode(err)

    async def detect_liquidation(self) -> bool:
        """``liquidate`` usable: in the build output and a liquidation module set on-chain
        (before that the contract reverts ``LiquidationModuleLocked``; the keeper then confirms
        with ``isLiquidatable`` and does not send)."""
        if not liquidation_available():
            return False
        out, rev = await self._call(_LIQ_MODULE)
        return rev is None and out is not None and int.from_bytes(out[-32:], "big") != 0

    # --- one step ---------------------------------------------------------------------------
    def rank(self, scan: ScanResult) -> list[LiquidationPlan]:
        """Plans for the liquidatable accounts, largest shortfall first (not yet in flight)."""
        plans = []
        book = self.index.book
        for row in scan.liquidatable:
            key = self.index.key_of(row)
            if key in self.in_flight:
                continue
            plan = self.tiers.plan(key, book.accounts[row], scan.exact[row], self.params,
                                   self.market_prices, self.cfg.slippage_ppm)
            if plan is not None:
                plans.append(plan)
        return plans

    async def confirm(self, plan: LiquidationPlan) -> bool:
        """eth_call the exact liquidation (or, before ``liquidate`` exists, ``isLiquidatable``).
        A ``NotLiquidatable`` answer is a lost race (someone was faster, or a fresher price)."""
        if self.has_liquidate:
            _, rev = await self._call(liquidate_calldata(plan, self.cfg.liquidator_subaccount))
        else:
            out, rev = await self._call(_IS_LIQ + abi_encode(["address", "uint32"], [plan.owner, plan.subaccount]))
            if rev is None and out is not None and not int.from_bytes(out[-32:], "big"):
                rev = ContractRevert(LOST_RACE, (), b"")
        if rev is None:
            return True
        if rev.name == LOST_RACE:
            self.stats.lost_races += 1
            log.info("lost race on %s/%d (confirm)", plan.owner, plan.subaccount)
        else:
            self.stats.errors += 1
            log.warning("liquidation of %s/%d would revert: %s", plan.owner, plan.subaccount, rev)
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
        plans = self.rank(scan)[: self.cfg.max_per_block]
        self.stats.candidates += len(plans)
        oks = await asyncio.gather(*(self.confirm(p) for p in plans))
        confirmed = [p for p, ok in zip(plans, oks) if ok]
        self.stats.confirmed += len(confirmed)
        if self.cfg.send and self.has_liquidate:
            for p in confirmed:
                await self._send(p)
        return confirmed

    # --- sending ----------------------------------------------------------------------------
    async def _fees(self) -> tuple[int, int]:
        blk = await self.w3.eth.get_block("latest")
        base = int(blk.get("baseFeePerGas", 0) or 0)
        tip = self.cfg.priority_fee_wei
        return min(2 * base + tip, self.cfg.max_fee_cap_wei), tip

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
        tx = _InFlight(plan, self._nonce, liquidate_calldata(plan, self.cfg.liquidator_subaccount),
                       max_fee, tip, time.monotonic())
        try:
            tx.hashes.append(bytes(await self.w3.eth.send_raw_transaction(self._sign(tx))))
        except Exception as err:  # noqa: BLE001 - usually a stale nonce: resync next time
            self._nonce = None
            self.stats.errors += 1
            log.warning("send failed for %s: %s", plan.key, err)
            return
        self._nonce += 1
        self.in_flight[plan.key] = tx
        self.stats.sent += 1
        self.stats.sent_at.append(time.time())

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

    async def check_in_flight(self) -> None:
        """Resolve mined liquidations; bump stuck ones; classify reverts (lost race or error)."""
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
            self.index.dirty.add(key)
            if receipt["status"] == 1:
                self.stats.mined_ok += 1
                continue
            # replay at the block it failed in to learn why
            try:
                await self.w3.eth.call({"from": self.address, "to": self.index.contract, "data": tx.data,
                                        "gas": self.cfg.gas_limit}, receipt["blockNumber"] - 1)
                rev = ContractRevert("Unknown", (), b"")
            except ContractLogicError as err:
                rev = self._decode(err)
            if rev.name == LOST_RACE:
                self.stats.lost_races += 1
                log.info("lost race on %s (mined)", key)
            else:
                self.stats.errors += 1
                log.warning("liquidation of %s reverted: %s", key, rev)

    async def run(self) -> None:
        """Tick on every new block until :meth:`stop`."""
        await self.index.load_funding()
        await self.index.sweep()
        while not self._stop.is_set():
            try:
                block = await self.w3.eth.block_number
                if block != self.last_block:
                    self.last_block = block
                    await self.tick()
                if self.in_flight:
                    await self.check_in_flight()
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
