"""``crossbook oracle set SYMBOL PRICE``: move a local settable price feed by hand.

For drills on a local chain (a crash that makes the keeper liquidate); production feeds are not
settable. Uses :func:`keeper.oracle_feeder.set_price` and waits until the update is mined and the
oracle adapter reports the new price.
"""
from __future__ import annotations

import argparse
import asyncio

from crossbook.commands.common import (
    Progress, add_chain_args, env, format_units, load_deployment, parse_units, resolve_key,
)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``oracle`` (with ``set``)."""
    p = sub.add_parser("oracle", help="local oracle tools: `oracle set SYMBOL PRICE`")
    osub = p.add_subparsers(dest="oracle_command", required=True)
    s = osub.add_parser("set", help="push a price to a local settable feed and wait until mined")
    s.add_argument("symbol", help="feed or market symbol: ETH, BTC, SOL (or ETH-PERP, ...)")
    s.add_argument("price", help="USD price, e.g. 1800 or 0.25")
    s.add_argument("--key", default=env("CROSSBOOK_ORACLE_KEY"),
                   help="key that sends the update (default the admin dev account) [$CROSSBOOK_ORACLE_KEY]")
    add_chain_args(s)
    s.set_defaults(func=run_set)


def run_set(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook oracle set``."""
    from web3 import Web3

    from crossbook.chain.clearinghouse import ClearinghouseClient
    from crossbook.chain.deploy import bind
    from crossbook.chain.devkeys import ADMIN
    from crossbook.config import DEFAULT_SPEC
    from keeper.oracle_feeder import set_price

    dep, rpc = load_deployment(args)
    sym = args.symbol.upper().removesuffix("-PERP")
    if sym not in dep.feeds:
        raise SystemExit(f"unknown feed {args.symbol!r}; one of {', '.join(sorted(dep.feeds))}")
    price = parse_units(args.price, 8)
    if price <= 0:
        raise SystemExit("price must be positive")
    w3 = Web3(Web3.HTTPProvider(rpc))
    decimals = int(bind(w3, "SettableFeed", dep.feeds[sym]).functions.decimals().call())
    prog = Progress(f"set {sym} to {format_units(price, 8)}")
    prog.update("sending")
    answer = asyncio.run(set_price(rpc, resolve_key(args.key, ADMIN), dep.feeds[sym], price, decimals))
    prog.done(f"mined (feed answer {answer})")
    feed_id = DEFAULT_SPEC.feed_by_symbol[sym].feed_id
    try:
        now = ClearinghouseClient(w3, dep).oracle_price(feed_id)
        print(f"oracle {sym} = {format_units(now, 8)}")
    except Exception as err:  # noqa: BLE001 - the adapter refuses an out-of-band price: say so
        print(f"feed {sym} set, but the oracle adapter refuses it: {err}")
        return 1
    return 0
