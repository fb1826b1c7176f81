"""On-chain actions of an account owner: approve an agent key, deposit, read health.

Synchronous (web3's HTTP provider) because these are rare, slow, confirmed actions; async bots
call them through ``asyncio.to_thread``.
"""
from __future__ import annotations

from pathlib import Path

from web3 import Web3

from crossbook.chain.clearinghouse import ClearinghouseClient
from settlement.events import ChainLiquidated
from crossbook.chain.deploy import Deployment
from crossbook.config import DEFAULT_SPEC, ExchangeSpec, risk_params
from crossbook.eip712 import Signer
from crossbook.margin import Health, SubAccount
from crossbook.sdk.risk import AccountRisk, account_risk


class ChainAccount:
    """One owner's key on one deployment.

    ``key`` pays gas and signs; it is the owner for :meth:`set_agent` and pays for deposits
    (a deposit may credit any owner's sub-account).
    """

    def __init__(self, client: ClearinghouseClient, key: str | bytes) -> None:
        self.client = client
        self.tx = client.sender(key)
        self.address = self.tx.address
        self.spec = client.spec

    @classmethod
    def from_deployment(cls, deployment: Deployment | str | Path, key: str | bytes,
                        rpc_url: str | None = None, spec: ExchangeSpec = DEFAULT_SPEC,
                        ) -> ChainAccount:
        """Connect to a deployment (a :class:`Deployment` or the JSON file ``crossbook up``
        writes) over HTTP JSON-RPC."""
        dep = deployment if isinstance(deployment, Deployment) else Deployment.load(Path(deployment))
        w3 = Web3(Web3.HTTPProvider(rpc_url or dep.rpc_url, request_kwargs={"timeout": 60}))
        return cls(ClearinghouseClient(w3, dep, spec), key)

    @property
    def signer(self) -> Signer:
        """The same key as an EIP-712 :class:`Signer` (for ``Client.login``)."""
        key = self.tx.account.key
        return Signer(bytes(key))

    # --- writes -----------------------------------------------------------------------------
    def set_agent(self, agent: str, approved: bool = True) -> None:
        """``setAgent(agent, approved)``: let ``agent`` sign orders and log in for this owner
        (the matcher learns it from the ``AgentSet`` event once the watcher forwards it)."""
        self.tx.transact(self.client.contract.functions.setAgent(
            Web3.to_checksum_address(agent), approved))

    def is_agent(self, agent: str, owner: str | None = None) -> bool:
        """Whether ``agent`` is approved for ``owner`` (default: this account)."""
        return bool(self.client.contract.functions.isAgent(
            Web3.to_checksum_address(owner or self.address),
            Web3.to_checksum_address(agent)).call())

    def token_balance(self, symbol: str) -> int:
        """This wallet's balance of a collateral token, in the token's atoms."""
        return int(self.client.token(symbol).functions.balanceOf(self.address).call())

    def mint_test_tokens(self, symbol: str, amount: int) -> None:
        """Mint test tokens to this wallet (the local chain's TestToken only)."""
        tok = self.client.token(symbol)
        self.tx.transact(tok.functions.mint(self.address, amount))

    def deposit(self, symbol: str, amount: int, sub: int = 0, owner: str | None = None) -> None:
        """Approve (when the allowance is short) and deposit ``amount`` token atoms into
        ``(owner or self, sub)``."""
        tok = self.client.token(symbol)
        spender = self.client.contract.address
        if int(tok.functions.allowance(self.address, spender).call()) < amount:
            self.tx.transact(tok.functions.approve(spender, amount))
        self.tx.transact(self.client.contract.functions.deposit(
            Web3.to_checksum_address(owner or self.address), sub, self.spec.asset_id(symbol),
            amount))

    # --- reads ------------------------------------------------------------------------------
    def health(self, sub: int = 0, owner: str | None = None) -> Health:
        """The contract's own ``health`` view (equity, requirements, health)."""
        return self.client.health(owner or self.address, sub)

    def subaccount(self, sub: int = 0, owner: str | None = None) -> SubAccount:
        """Balances and positions as the contract holds them."""
        return self.client.subaccount(owner or self.address, sub)

    def risk(self, sub: int = 0, owner: str | None = None) -> AccountRisk:
        """Health, leverage and liquidation prices computed from chain state and prices."""
        return account_risk(self.subaccount(sub, owner), risk_params(self.spec),
                            self.client.prices())

    def liquidations(self, from_block: int = 0) -> list[ChainLiquidated]:
        """``Liquidated`` events since ``from_block``."""
        return self.client.liquidated_events(from_block)
