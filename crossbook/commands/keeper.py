"""``crossbook keeper``: the liquidation keeper (keeper.liquidator + keeper.index) as a service.

Thin on purpose: the keeper logic lives in :mod:`keeper.liquidator`; this wraps it with flags,
structured logs, metrics and a clean SIGTERM/SIGINT shutdown.
"""
from __future__ import annotations

import argparse
import asyncio
import logging

from crossbook.commands.common import (
    add_chain_args, add_service_args, env, load_deployment, resolve_key, start_service,
)
from crossbook.shutdown import on_shutdown_signals

log = logging.getLogger("crossbook.keeper")
METRICS_PORT = 9104


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``keeper``."""
    p = sub.add_parser("keeper", help="run the liquidation keeper: scan every sub-account each block, "
                                      "liquidate the unhealthy ones")
    add_chain_args(p)
    p.add_argument("--key", default=env("CROSSBOOK_KEEPER_KEY"),
                   help="keeper private key (hex or dev:N; default the KEEPER dev account) "
                        "[$CROSSBOOK_KEEPER_KEY]")
    p.add_argument("--subaccount", type=int, default=int(env("CROSSBOOK_KEEPER_SUBACCOUNT", "0") or 0),
                   help="the keeper's own sub-account that takes positions over [$CROSSBOOK_KEEPER_SUBACCOUNT]")
    p.add_argument("--confirmations", type=int, default=int(env("CROSSBOOK_CONFIRMATIONS", "0") or 0),
                   help="blocks an event must be buried under before the index uses it [$CROSSBOOK_CONFIRMATIONS]")
    p.add_argument("--sweep-interval", type=float, default=60.0,
                   help="seconds between full re-reads of every known account")
    p.add_argument("--max-per-block", type=int, default=8, help="liquidations sent per block at most")
    p.add_argument("--dry-run", action="store_true",
                   help="scan, rank and confirm by eth_call, but send nothing")
    add_service_args(p, "keeper", METRICS_PORT)
    p.set_defaults(func=run)


async def _main(args: argparse.Namespace) -> int:
    from crossbook.chain.devkeys import KEEPER
    from crossbook.config import risk_params
    from crossbook.metrics import instrument_keeper, mark_ready
    from keeper.index import SubAccountIndex
    from keeper.liquidator import Liquidator, LiquidatorConfig
    from settlement.relayer import connect

    dep, rpc = load_deployment(args)
    key = resolve_key(args.key, KEEPER)
    idx = SubAccountIndex(connect(rpc), rpc, dep.clearinghouse, risk_params(), start_block=dep.start_block,
                          confirmations=args.confirmations, sweep_interval_s=args.sweep_interval)
    liq = Liquidator(connect(rpc), idx, dep.oracle, key,
                     LiquidatorConfig(liquidator_subaccount=args.subaccount,
                                      max_per_block=args.max_per_block, send=not args.dry_run))
    instrument_keeper(liq)
    on_shutdown_signals(liq.stop)
    log.info("keeper %s (sub-account %d) on %s, clearinghouse %s%s", liq.address, args.subaccount, rpc,
             dep.clearinghouse, " (dry run)" if args.dry_run else "")

    async def ready_when_scanned() -> None:
        while liq.stats.scans == 0:
            await asyncio.sleep(0.05)
        mark_ready("keeper")
        log.info("keeper ready: %d sub-accounts indexed", len(idx.book))

    ready = asyncio.create_task(ready_when_scanned())
    try:
        await liq.run()
    finally:
        ready.cancel()
        await idx.close()
    s = liq.stats
    log.info("keeper stopped: %d scans, %d sent, %d won, %d lost races, %d errors",
             s.scans, s.sent, s.mined_ok, s.lost_races, s.errors)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook keeper``."""
    from crossbook.cli import _run_async

    start_service(args)
    rc: int = _run_async(_main(args))
    return rc
