"""Shared helpers of the keeper's chain tests: keepers on a LocalExchange, a driver that steps
them until nothing is left to do, and the conservation check of invariant 2 at any block."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from web3 import Web3

from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import risk_params
from keeper.index import AccountKey, RpcBatch, SubAccountIndex, read_accounts
from keeper.liquidator import KEEPER_ROLE, Liquidator, LiquidatorConfig
from settlement.relayer import connect


def make_keeper(ex: LocalExchange, key: str, sub: int = 0, **cfg: object) -> Liquidator:
    """A Liquidator with its own index on ``ex`` (liquidator sub-account ``sub``)."""
    idx = SubAccountIndex(connect(ex.node.url), ex.node.url, ex.client.contract.address, risk_params(),
                          start_block=ex.deployment.start_block)
    return Liquidator(connect(ex.node.url), idx, ex.deployment.oracle, key,
                      LiquidatorConfig(liquidator_subaccount=sub, **cfg))  # type: ignore[arg-type]


def grant_keeper_role(ex: LocalExchange, address: str) -> None:
    """Admin grants KEEPER_ROLE (needed for ``deleverage``)."""
    ex.admin.transact(ex.client.contract.functions.grantRole(KEEPER_ROLE, Web3.to_checksum_address(address)))


async def drive(keepers: Sequence[Liquidator], rounds: int = 40) -> int:
    """Step every keeper (forcing a tick) until a whole round sends nothing, resolves nothing
    and leaves nothing in flight; returns the number of rounds used. (An action resolved after
    its keeper's last tick of the round may leave a next step to plan: a round that resolves
    one is never the last.)"""
    for i in range(rounds):
        sent = sum(k.stats.sent for k in keepers)
        resolved = 0
        for k in keepers:
            k.last_block = -1  # tick even without a new block (dirty accounts re-read)
            await k.step()
        for k in keepers:
            if k.in_flight:
                resolved += await k.check_in_flight()
        if sum(k.stats.sent for k in keepers) == sent and not resolved and not any(k.in_flight for k in keepers):
            return i + 1
    raise AssertionError(f"keepers still busy after {rounds} rounds")


async def close(keepers: Iterable[Liquidator]) -> None:
    """Release the keepers' HTTP sessions."""
    for k in keepers:
        await k.index.close()


@dataclass(frozen=True)
class Ledger:
    """Both sides of invariant 2 at one block, per asset (quote asset: with unbacked debt and the
    funding balances)."""

    block: int
    quote_lhs: int  # token balance + unbackedDebt
    quote_rhs: int  # sum(quote) + insurance + fee pool + sum funding balances
    collateral: dict[int, tuple[int, int]]  # asset -> (token balance, sum of sub-account balances)

    @property
    def holds(self) -> bool:
        """Conservation holds for every asset."""
        return self.quote_lhs == self.quote_rhs and all(a == b for a, b in self.collateral.values())


def ledger(ex: LocalExchange, accounts: Iterable[AccountKey], block: int | str = "latest") -> Ledger:
    """Read invariant 2's terms at ``block`` (``accounts`` must be every funded sub-account)."""
    c = ex.client.contract.functions
    blk = ex.w3.eth.block_number if block == "latest" else int(block)
    at = {"block_identifier": blk}
    accounts = sorted(set(accounts))
    usdc = ex.client.token(ex.spec.quote_symbol)
    lhs = usdc.functions.balanceOf(ex.client.contract.address).call(**at) + c.unbackedDebt().call(**at)
    rhs = sum(c.quoteBalance(o, s).call(**at) for o, s in accounts)
    rhs += c.insuranceFund().call(**at) + c.feePool().call(**at)
    rhs += sum(c.fundingBalance(m).call(**at) for m in range(len(ex.spec.markets)))
    coll = {}
    for i, spec in enumerate(ex.spec.collaterals):
        tok = ex.client.token(spec.symbol)
        coll[i + 1] = (tok.functions.balanceOf(ex.client.contract.address).call(**at),
                       sum(c.collateralBalance(o, s, i + 1).call(**at) for o, s in accounts))
    return Ledger(blk, lhs, rhs, coll)


async def ledger_batched(ex: LocalExchange, rpc: RpcBatch, accounts: Iterable[AccountKey], block: int) -> Ledger:
    """:func:`ledger` with the per-account reads in JSON-RPC batches (hundreds of accounts)."""
    c = ex.client.contract.functions
    at = {"block_identifier": block}
    keys = sorted(set(accounts))
    assets = list(range(1, len(ex.spec.collaterals) + 1))
    accts = await read_accounts(rpc, ex.client.contract.address, keys, assets, [], block)
    usdc = ex.client.token(ex.spec.quote_symbol)
    lhs = usdc.functions.balanceOf(ex.client.contract.address).call(**at) + c.unbackedDebt().call(**at)
    rhs = sum(a.quote for a in accts.values()) + c.insuranceFund().call(**at) + c.feePool().call(**at)
    rhs += sum(c.fundingBalance(m).call(**at) for m in range(len(ex.spec.markets)))
    coll = {}
    for i, spec in enumerate(ex.spec.collaterals):
        tok = ex.client.token(spec.symbol)
        coll[i + 1] = (tok.functions.balanceOf(ex.client.contract.address).call(**at),
                       sum(a.collateral.get(i + 1, 0) for a in accts.values()))
    return Ledger(block, lhs, rhs, coll)
