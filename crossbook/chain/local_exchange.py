"""A deployed exchange on a local anvil with deterministic users: the harness behind the
integration tests, the gas benchmark and the demo stack.

Users are deterministic keys (not anvil's ten dev accounts) so a scenario can have hundreds;
the dev accounts pay for deposits (`deposit` credits any owner) and act as admin and operator.
"""
from __future__ import annotations

import itertools
from typing import Sequence

from eth_utils import keccak
from web3 import Web3

from crossbook.chain.anvil import AnvilNode, rpc_call
from crossbook.chain.clearinghouse import ClearinghouseClient, SettleResult
from crossbook.chain.deploy import Deployment, deploy_exchange
from crossbook.chain.devkeys import ADMIN, FIRST_USER, OPERATOR, dev_address, dev_key
from crossbook.config import DEFAULT_SPEC, ExchangeSpec
from crossbook.eip712 import Domain, Signer
from crossbook.protocol_types import FillItem, Item, Order, Transfer, TransferItem, Withdrawal, WithdrawItem

FAR_FUTURE = 2**40


def user_key(index: int) -> bytes:
    """Private key of deterministic test user `index` (derived from a public label: local chains only)."""
    return keccak(text=f"crossbook-test-user-{index}")


def user_signer(index: int) -> Signer:
    """Signer of deterministic test user `index`."""
    return Signer(user_key(index))


class LocalExchange:
    """Deploys the exchange on `node` and offers one-line helpers for signed items."""

    def __init__(self, node: AnvilNode, spec: ExchangeSpec = DEFAULT_SPEC, harness: bool = False) -> None:
        self.node = node
        self.spec = spec
        self.w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        self.deployment: Deployment = deploy_exchange(
            self.w3, dev_key(ADMIN), dev_address(OPERATOR), node.url, spec, harness=harness)
        self.client = ClearinghouseClient(self.w3, self.deployment, spec)
        self.admin = self.client.sender(dev_key(ADMIN))
        self.operator = self.client.sender(dev_key(OPERATOR))
        self.funder = self.client.sender(dev_key(FIRST_USER))
        self.domain: Domain = self.client.domain
        self._nonces: dict[str, itertools.count[int]] = {}

    # --- accounts ---------------------------------------------------------------------------
    def fund(self, owner: str, subaccount: int, symbol: str, amount: int) -> None:
        """Deposit freshly minted test tokens into (owner, subaccount)."""
        self.client.mint_and_deposit(self.funder, owner, subaccount, symbol, amount)

    def give_eth(self, address: str, wei: int = 10**20) -> None:
        """Give an address gas money (anvil only)."""
        rpc_call(self.node.url, "anvil_setBalance", [address, hex(wei)])

    # --- signed items -----------------------------------------------------------------------
    def next_nonce(self, owner: str) -> int:
        """The owner's next nonce. Sequential per owner, as a client SDK issues them: the contract
        keeps the states of 128 consecutive nonces in one storage slot (docs/protocol.md section 4)."""
        counter = self._nonces.setdefault(owner.lower(), itertools.count(1))
        return next(counter)

    def order(self, signer: Signer, market: int, is_buy: bool, price: int, size: int, *,
              subaccount: int = 0, owner: str | None = None, nonce: int | None = None,
              expiry: int = FAR_FUTURE, reduce_only: bool = False, max_fee_ppm: int = 1_000,
              domain: Domain | None = None) -> tuple[Order, bytes]:
        """An order signed by `signer` (for `owner`, default the signer itself)."""
        owner = owner or signer.address
        o = Order(owner=owner, subaccount=subaccount, market=market, is_buy=is_buy,
                  reduce_only=reduce_only, price=price, size=size,
                  nonce=self.next_nonce(owner) if nonce is None else nonce, expiry=expiry, max_fee_ppm=max_fee_ppm)
        return o, signer.sign_order(domain or self.domain, o)

    @staticmethod
    def fill(taker: tuple[Order, bytes], maker: tuple[Order, bytes], size: int, price: int,
             taker_fee_ppm: int = 500, maker_fee_ppm: int = 200) -> FillItem:
        """A fill item matching `taker` against `maker`."""
        return FillItem(taker=taker[0], taker_sig=taker[1], maker=maker[0], maker_sig=maker[1],
                        size=size, price=price, taker_fee_ppm=taker_fee_ppm, maker_fee_ppm=maker_fee_ppm)

    def withdrawal(self, signer: Signer, asset: int, amount: int, *, subaccount: int = 0,
                   nonce: int | None = None, expiry: int = FAR_FUTURE) -> WithdrawItem:
        """A withdrawal item signed by the owner."""
        w = Withdrawal(owner=signer.address, subaccount=subaccount, asset=asset, amount=amount,
                       nonce=self.next_nonce(signer.address) if nonce is None else nonce, expiry=expiry)
        return WithdrawItem(withdrawal=w, sig=signer.sign_withdrawal(self.domain, w))

    def transfer(self, signer: Signer, asset: int, amount: int, from_sub: int, to_sub: int, *,
                 expiry: int = FAR_FUTURE) -> TransferItem:
        """A transfer item between two of the signer's sub-accounts."""
        t = Transfer(owner=signer.address, from_subaccount=from_sub, to_subaccount=to_sub, asset=asset,
                     amount=amount, nonce=self.next_nonce(signer.address), expiry=expiry)
        return TransferItem(transfer=t, sig=signer.sign_transfer(self.domain, t))

    # --- settlement -------------------------------------------------------------------------
    def settle(self, items: Sequence[Item], first_seq: int | None = None, gas: int | None = None) -> SettleResult:
        """Settle `items` as the next batch (or at an explicit `first_seq`)."""
        seq = self.client.next_seq() if first_seq is None else first_seq
        return self.client.settle(self.operator, seq, items, gas=gas)

    def set_price(self, feed_symbol: str, price: int) -> None:
        """Move an oracle price (1e8 scale)."""
        self.client.set_price(self.admin, feed_symbol, price)

    # --- chain control (anvil) --------------------------------------------------------------
    def snapshot(self) -> str:
        """Take an EVM snapshot."""
        return str(rpc_call(self.node.url, "evm_snapshot"))

    def revert(self, snap: str) -> None:
        """Return to a snapshot (consumes it), forget cached nonces, and re-post the feeds' prices.

        anvil keeps a time offset set by `advance_time` across `evm_revert`, so the reverted
        feeds could be stale at the chain's clock; re-posting the same answers keeps every test
        starting from fresh prices equal to the snapshot's."""
        if rpc_call(self.node.url, "evm_revert", [snap]) is not True:
            raise RuntimeError(f"evm_revert({snap}) failed: the chain was not rolled back")
        for s in (self.admin, self.operator, self.funder):
            s._nonce = None
        self.refresh_prices()

    def advance_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block."""
        rpc_call(self.node.url, "evm_increaseTime", [seconds])
        rpc_call(self.node.url, "evm_mine")

    def refresh_prices(self) -> None:
        """Re-post every feed's current answer so it is fresh after `advance_time`."""
        for sym in self.deployment.feeds:
            feed = self.client.feed(sym)
            answer = feed.functions.latestRoundData().call()[1]
            self.admin.transact(feed.functions.setAnswer(answer))

    def fund_many(self, owners: Sequence[str], symbol: str, amount: int, subaccount: int = 0) -> None:
        """Deposit `amount` into each owner's sub-account with one mint and one approval."""
        self.fund_each(symbol, [(o, subaccount, amount) for o in owners])

    def fund_each(self, symbol: str, deposits: Sequence[tuple[str, int, int]]) -> None:
        """Deposit ``amount`` into each ``(owner, subaccount, amount)`` with one mint and one
        approval, sending every deposit before waiting for any (hundreds of accounts quickly)."""
        if not deposits:
            return
        tok = self.client.token(symbol)
        total = sum(a for _, _, a in deposits)
        self.funder.transact(tok.functions.mint(self.funder.address, total))
        self.funder.transact(tok.functions.approve(self.client.contract.address, total))
        asset = self.spec.asset_id(symbol)
        fn = self.client.contract.functions.deposit
        hashes = [self.funder.submit({"to": self.client.contract.address, "gas": 200_000,
                                      "data": fn(Web3.to_checksum_address(o), s, asset, a)._encode_transaction_data()})
                  for o, s, a in deposits]
        for h in hashes:
            self.funder.wait(h)

    def deposit_insurance(self, amount: int) -> None:
        """Seed the insurance fund with freshly minted quote tokens."""
        tok = self.client.token(self.spec.quote_symbol)
        self.funder.transact(tok.functions.mint(self.funder.address, amount))
        self.funder.transact(tok.functions.approve(self.client.contract.address, amount))
        self.funder.transact(self.client.contract.functions.depositInsurance(amount))
