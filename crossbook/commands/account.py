"""``crossbook account``: a sub-account's equity, health, leverage and positions.

Balances come from the contract's views; health is computed twice — by the contract's
``health()`` view and by the Python margin engine (:mod:`crossbook.margin`) on the same state and
oracle prices — and the two must agree (invariant 5). Liquidation prices are the SDK's
(:func:`crossbook.sdk.risk.liquidation_price`, the same figure the dashboard and bots see): for
each position, the price of its feed at which maintenance health turns negative with every other
price held still (a collateral asset on the same feed moves with it, as it would in reality).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from crossbook.commands.common import add_chain_args, chain_client, env, format_units, resolve_key


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``account``."""
    p = sub.add_parser("account", help="equity, initial/maintenance health, leverage and positions "
                                       "(with liquidation prices) of a sub-account")
    p.add_argument("owner", nargs="?", default=None,
                   help="owner address (default: the --key's address, else the first demo account)")
    p.add_argument("--subaccount", type=int, default=0, help="sub-account (default 0)")
    p.add_argument("--key", default=env("CROSSBOOK_KEY"), help="use this key's address [$CROSSBOOK_KEY]")
    p.add_argument("--json", action="store_true", help="print JSON (integers in protocol units)")
    add_chain_args(p)
    p.set_defaults(func=run)


def _usd(atoms: int) -> str:
    return format_units(atoms, 6, 2)


def _px(p: int | None) -> str:
    return "-" if p is None else format_units(p, 8, 4)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook account``."""
    from eth_account import Account
    from web3 import Web3

    from crossbook.chain.devkeys import FIRST_USER, dev_address
    from crossbook.sdk.risk import account_report

    client = chain_client(args)
    if args.owner:
        owner: str = Web3.to_checksum_address(args.owner)
    elif args.key:
        owner = Account.from_key(resolve_key(args.key, FIRST_USER)).address
    else:
        owner = dev_address(FIRST_USER)
    rep = account_report(client, owner, args.subaccount)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    lev = rep["leverage_x100"]
    print(f"account   {owner} / sub-account {args.subaccount}")
    print(f"quote     {_usd(rep['quote'])} USDC")
    for sym, amt in rep["collateral"].items():
        dec = next(c.decimals for c in client.spec.collaterals if c.symbol == sym)
        print(f"collateral {format_units(amt, dec)} {sym}")
    if rep["unpriced"]:
        print(f"health    unavailable: no oracle price for {', '.join(rep['unpriced'])} (reduce-only "
              f"mode: only closes that stay solvent trade, nothing is liquidated)")
    else:
        print(f"equity    {_usd(rep['equity'])} USD")
        print(f"health    initial {_usd(rep['initial_health'])}   maintenance "
              f"{_usd(rep['maintenance_health'])}   {'LIQUIDATABLE' if rep['liquidatable'] else 'healthy'}")
        print(f"leverage  {'-' if lev is None else f'{lev // 100}.{lev % 100:02d}x'}   "
              f"(notional {_usd(rep['notional'])} USD)")
    if rep["chain_health_agrees"] is False:
        print("WARNING: the contract's health view disagrees with the Python margin engine")
    if rep["positions"]:
        print(f"{'market':<10} {'size':>14} {'entry':>14} {'oracle':>14} {'uPnL':>14} {'liq. price':>14}")
        for p in rep["positions"]:
            upnl = "-" if p["unrealized_pnl"] is None else _usd(p["unrealized_pnl"])
            print(f"{p['symbol']:<10} {format_units(p['size'], 8, 4):>14} {_px(p['entry_price']):>14} "
                  f"{_px(p['oracle_price']):>14} {upnl:>14} {_px(p['liquidation_price']):>14}")
        for p in rep["positions"]:
            if p["liquidation_down"] is not None and p["liquidation_up"] is not None:
                print(f"{p['symbol']}: liquidated at or below {_px(p['liquidation_down'])} and at or "
                      f"above {_px(p['liquidation_up'])} (a short hedged by collateral on its feed)")
    else:
        print("no open positions")
    return 0
