"""A synchronous client for a deployed clearinghouse: funding accounts, settling, reading views.

Used by the CLI, the integration tests and the gas benchmark. The relayer and keeper use their
own async paths; this one favours clarity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from crossbook.batch_codec import encode_batch
from crossbook.chain.deploy import Deployment, bind, error_decoder
from crossbook.chain.sender import TxSender
from crossbook.config import DEFAULT_SPEC, ExchangeSpec
from crossbook.eip712 import Domain
from crossbook.margin import Health, Position, Prices, SubAccount
from crossbook.protocol_types import Item, RejectReason
from settlement.events import ChainLiquidated
from settlement.watcher import EventDecoder


@dataclass
class SettleResult:
    """What one `settle` transaction did."""

    receipt: TxReceipt
    first_seq: int
    count: int
    rejected: dict[int, RejectReason] = field(default_factory=dict)

    @property
    def gas_used(self) -> int:
        """Gas the transaction consumed."""
        return int(self.receipt["gasUsed"])


class ClearinghouseClient:
    """Typed access to one deployment."""

    def __init__(self, w3: Web3, deployment: Deployment, spec: ExchangeSpec = DEFAULT_SPEC) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.spec = spec
        self.contract: Contract = bind(w3, deployment.contract_name, deployment.clearinghouse)
        self.decoder = error_decoder()
        self.events = EventDecoder(self.contract.abi, address=deployment.clearinghouse)
        self.domain = Domain(chain_id=deployment.chain_id, verifying_contract=deployment.clearinghouse)

    def sender(self, key: str | bytes) -> TxSender:
        """A transaction sender for `key` that decodes this contract's custom errors."""
        return TxSender(self.w3, key, self.decoder)

    def token(self, symbol: str) -> Contract:
        """The ERC20 (TestToken) listed under `symbol`."""
        return bind(self.w3, "TestToken", self.deployment.tokens[symbol])

    def feed(self, symbol: str) -> Contract:
        """The settable price feed for `symbol` (local chains only)."""
        return bind(self.w3, "SettableFeed", self.deployment.feeds[symbol])

    # --- writes -----------------------------------------------------------------------------
    def mint_and_deposit(self, payer: TxSender, owner: str, subaccount: int, symbol: str, amount: int) -> None:
        """Mint test tokens to `payer`, approve, and deposit them into (owner, subaccount)."""
        tok = self.token(symbol)
        payer.transact(tok.functions.mint(payer.address, amount))
        payer.transact(tok.functions.approve(self.contract.address, amount))
        payer.transact(self.contract.functions.deposit(
            Web3.to_checksum_address(owner), subaccount, self.spec.asset_id(symbol), amount))

    def set_price(self, sender: TxSender, feed_symbol: str, price: int) -> None:
        """Push a 1e8-scaled price to a settable feed."""
        sender.transact(self.feed(feed_symbol).functions.setAnswer(price))

    def settle(self, operator: TxSender, first_seq: int, items: Sequence[Item], gas: int | None = None) -> SettleResult:
        """Encode and settle one batch; returns the receipt and the rejected sequence numbers."""
        batch = encode_batch(first_seq, items)
        receipt = operator.transact(self.contract.functions.settle(batch), gas=gas)
        rejected = {
            int(ev["args"]["seq"]): RejectReason(int(ev["args"]["reason"]))
            for ev in self.contract.events.ItemRejected().process_receipt(receipt, errors=DISCARD)
        }
        return SettleResult(receipt, first_seq, len(items), rejected)

    # --- liquidation (docs/protocol.md section 9) -------------------------------------------
    def liquidate(self, liquidator: TxSender, owner: str, subaccount: int, market: int, max_size: int,
                  price_limit: int, liquidator_subaccount: int, gas: int | None = None) -> TxReceipt:
        """Send ``liquidate``: ``liquidator``'s sub-account takes over (part of) the position."""
        return liquidator.transact(self.contract.functions.liquidate(
            Web3.to_checksum_address(owner), subaccount, market, max_size, price_limit, liquidator_subaccount),
            gas=gas)

    def call_liquidate(self, liquidator: str, owner: str, subaccount: int, market: int, max_size: int,
                       price_limit: int, liquidator_subaccount: int) -> tuple[int, int]:
        """``(size, price)`` that ``liquidate`` would return now (eth_call from ``liquidator``); raises
        the decoded ContractRevert when it would revert."""
        fn = self.contract.functions.liquidate(
            Web3.to_checksum_address(owner), subaccount, market, max_size, price_limit, liquidator_subaccount)
        size, price = self._call_from(fn, liquidator)
        return int(size), int(price)

    def liquidate_collateral(self, liquidator: TxSender, owner: str, subaccount: int, asset: int,
                             max_amount: int, price_limit: int, liquidator_subaccount: int) -> TxReceipt:
        """Send ``liquidateCollateral``: buy the target's collateral at a discount against its debt."""
        return liquidator.transact(self.contract.functions.liquidateCollateral(
            Web3.to_checksum_address(owner), subaccount, asset, max_amount, price_limit, liquidator_subaccount))

    def settle_bad_debt(self, sender: TxSender, owner: str, subaccount: int) -> TxReceipt:
        """Send ``settleBadDebt`` (permissionless)."""
        return sender.transact(self.contract.functions.settleBadDebt(Web3.to_checksum_address(owner), subaccount))

    def deleverage(self, keeper: TxSender, owner: str, subaccount: int, market: int, counterparty: str,
                   counterparty_subaccount: int, size: int) -> TxReceipt:
        """Send ``deleverage`` (KEEPER_ROLE): close ``size`` against the counterparty at the bankruptcy price."""
        return keeper.transact(self.contract.functions.deleverage(
            Web3.to_checksum_address(owner), subaccount, market, Web3.to_checksum_address(counterparty),
            counterparty_subaccount, size))

    def liquidation_params(self) -> tuple[int, int, int, int]:
        """``(penaltyPpm, insuranceSharePpm, bufferPpm, criticalPpm)``."""
        return tuple(int(x) for x in self._call(self.contract.functions.liquidationParams()))  # type: ignore[return-value]

    def unbacked_debt(self) -> int:
        """Bad debt nobody covered (quote atoms)."""
        return int(self._call(self.contract.functions.unbackedDebt()))

    def insurance_fund(self) -> int:
        """Insurance fund (quote atoms)."""
        return int(self._call(self.contract.functions.insuranceFund()))

    def liquidated_events(self, from_block: int = 0,
                          to_block: int | Literal["latest"] = "latest") -> list[ChainLiquidated]:
        """Every ``Liquidated`` event in the block range, oldest first (decoded as the watcher
        decodes it)."""
        logs: Any = self.w3.eth.get_logs({"address": self.contract.address, "fromBlock": from_block,
                                          "toBlock": to_block,
                                          "topics": [self.events.topic("Liquidated")]})
        return self._liquidated(logs)

    def liquidated_in(self, receipt: TxReceipt) -> list[ChainLiquidated]:
        """The ``Liquidated`` events of one transaction receipt."""
        return self._liquidated(receipt["logs"])

    def _liquidated(self, logs: Any) -> list[ChainLiquidated]:
        return [e for e in self.events.decode_logs(logs) if isinstance(e, ChainLiquidated)]

    # --- views ------------------------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        from web3.exceptions import ContractLogicError

        try:
            return fn.call()
        except ContractLogicError as err:
            data = err.data if isinstance(err.data, str) else ""
            raise self.decoder.decode(bytes.fromhex(data[2:]) if data.startswith("0x") else b"") from None

    def _call_from(self, fn: Any, sender: str) -> Any:
        from web3.exceptions import ContractLogicError

        try:
            return fn.call({"from": Web3.to_checksum_address(sender)})
        except ContractLogicError as err:
            data = err.data if isinstance(err.data, str) else ""
            raise self.decoder.decode(bytes.fromhex(data[2:]) if data.startswith("0x") else b"") from None

    def next_seq(self) -> int:
        """The sequence number the contract accepts next."""
        return int(self._call(self.contract.functions.nextSeq()))

    def health(self, owner: str, subaccount: int) -> Health:
        """Equity, requirements and health at current oracle prices, as the contract computes them."""
        h = self._call(self.contract.functions.health(Web3.to_checksum_address(owner), subaccount))
        return Health(*[int(x) for x in h])

    def quote_balance(self, owner: str, subaccount: int) -> int:
        """Signed quote balance in atoms."""
        return int(self._call(self.contract.functions.quoteBalance(Web3.to_checksum_address(owner), subaccount)))

    def collateral_balance(self, owner: str, subaccount: int, asset: int) -> int:
        """Balance of a non-quote collateral asset in token atoms."""
        return int(self._call(self.contract.functions.collateralBalance(
            Web3.to_checksum_address(owner), subaccount, asset)))

    def position(self, owner: str, subaccount: int, market: int) -> Position:
        """(size, open notional, funding snapshot) of one position."""
        size, on, snap = self._call(self.contract.functions.position(
            Web3.to_checksum_address(owner), subaccount, market))
        return Position(int(size), int(on), int(snap))

    def filled_amount(self, owner: str, nonce: int) -> int:
        """Cumulative filled size of a partially filled (owner, nonce); 0 if untouched,
        :data:`~crossbook.protocol_types.NONCE_SPENT` once a fill completed an order on that nonce."""
        return int(self._call(self.contract.functions.filledAmount(Web3.to_checksum_address(owner), nonce)))

    def subaccount(self, owner: str, subaccount: int) -> SubAccount:
        """The sub-account's full state read from the chain, in the margin engine's shape."""
        acct = SubAccount(quote=self.quote_balance(owner, subaccount))
        for asset in range(1, len(self.spec.collaterals) + 1):
            amount = self.collateral_balance(owner, subaccount, asset)
            if amount:
                acct.collateral[asset] = amount
        for market in range(len(self.spec.markets)):
            pos = self.position(owner, subaccount, market)
            if pos.size or pos.open_notional:
                acct.positions[market] = pos
        return acct

    def oracle_price(self, feed_id: int) -> int:
        """The adapter's validated 1e8 price for a feed (reverts with the oracle's error)."""
        oracle = bind(self.w3, "OracleAdapter", self.deployment.oracle)
        return int(self._call(oracle.functions.price(feed_id)))

    def prices(self) -> Prices:
        """Current oracle prices and funding indices, keyed as the margin engine expects."""
        assets = {i + 1: self.oracle_price(c.feed_id) for i, c in enumerate(self.spec.collaterals)}
        markets = {i: self.oracle_price(m.feed_id) for i, m in enumerate(self.spec.markets)}
        funding = {i: int(self._call(self.contract.functions.cumulativeFunding(i))) for i in markets}
        return Prices(assets=assets, markets=markets, funding=funding)

    def available_prices(self) -> Prices:
        """:meth:`prices` without the ones the adapter refuses (stale, out of band: such a
        market is in reduce-only mode, docs/protocol.md §9.8), instead of failing on them; every
        market's funding index."""
        oracle = bind(self.w3, "OracleAdapter", self.deployment.oracle)
        ok: dict[int, int] = {}
        for f in sorted({f.feed_id for f in self.spec.feeds}):
            good, p = self._call(oracle.functions.tryPrice(f))
            if good:
                ok[f] = int(p)
        assets = {i + 1: ok[c.feed_id] for i, c in enumerate(self.spec.collaterals) if c.feed_id in ok}
        markets = {i: ok[m.feed_id] for i, m in enumerate(self.spec.markets) if m.feed_id in ok}
        funding = {i: int(self._call(self.contract.functions.cumulativeFunding(i)))
                   for i in range(len(self.spec.markets))}
        return Prices(assets=assets, markets=markets, funding=funding)
