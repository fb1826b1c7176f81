"""``crossbook deposit``: move collateral from a wallet into a sub-account on-chain.

A deposit is an ordinary on-chain transaction (approve + deposit); the watcher tells the matcher,
which credits the shadow ledger. ``--mint`` first mints the test token (local chains only).
"""
from __future__ import annotations

import argparse

from crossbook.commands.common import (
    add_chain_args, asset_of, chain_client, env, format_units, parse_units, resolve_key, transact,
)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``deposit``."""
    p = sub.add_parser("deposit", help="deposit collateral into a sub-account (waits until mined)")
    p.add_argument("amount", help="amount in whole units, e.g. 1000 or 0.5")
    p.add_argument("--asset", default="USDC", help="USDC (default), WETH or WBTC")
    p.add_argument("--subaccount", type=int, default=0, help="target sub-account (default 0)")
    p.add_argument("--to", default=None, help="credit this owner instead of the key's address")
    p.add_argument("--key", default=env("CROSSBOOK_KEY"),
                   help="paying wallet's private key (hex or dev:N; default the first demo account) "
                        "[$CROSSBOOK_KEY]")
    p.add_argument("--mint", action="store_true", help="mint the test token first (local chains)")
    add_chain_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook deposit``."""
    from web3 import Web3

    from crossbook.chain.devkeys import FIRST_USER

    client = chain_client(args)
    asset, decimals, sym = asset_of(args.asset)
    amount = parse_units(args.amount, decimals)
    if amount <= 0:
        raise SystemExit("amount must be positive")
    sender = client.sender(resolve_key(args.key, FIRST_USER))
    owner = Web3.to_checksum_address(args.to or sender.address)
    token = client.token(sym)
    if args.mint:
        transact(sender, token.functions.mint(sender.address, amount), f"mint {args.amount} {sym}")
    balance = int(token.functions.balanceOf(sender.address).call())
    if balance < amount:
        raise SystemExit(f"wallet {sender.address} holds {format_units(balance, decimals)} {sym}, "
                         f"less than {args.amount}; use --mint on a local chain")
    allowance = int(token.functions.allowance(sender.address, client.contract.address).call())
    if allowance < amount:
        transact(sender, token.functions.approve(client.contract.address, amount), f"approve {sym}")
    r = transact(sender, client.contract.functions.deposit(owner, args.subaccount, asset, amount),
                 f"deposit {args.amount} {sym} into {owner}/{args.subaccount}")
    new = (client.quote_balance(owner, args.subaccount) if asset == 0
           else client.collateral_balance(owner, args.subaccount, asset))
    print(f"deposited {format_units(amount, decimals)} {sym} into {owner}/{args.subaccount} in block "
          f"{r['blockNumber']}; balance now {format_units(new, decimals)} {sym}")
    return 0
