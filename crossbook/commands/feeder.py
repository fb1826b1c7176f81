"""``crossbook feeder``: push oracle prices to the local SettableFeeds (keeper.oracle_feeder).

Random walk by default (seeded, so a run is reproducible), a scenario such as ``"-40% in 10m"``
for drills, or ``--replay FILE`` (``t_ms,price`` rows, 1e8 scale). Local chains only: production
feeds are Chainlink's, nobody pushes them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

from crossbook.commands.common import (
    add_chain_args, add_service_args, env, load_deployment, resolve_key, start_service,
)
from crossbook.shutdown import stop_event

log = logging.getLogger("crossbook.feeder")
METRICS_PORT = 9105
FEEDER_DEV_INDEX = 9  # its own dev account: its nonces never collide with admin or operator


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``feeder``."""
    p = sub.add_parser("feeder", help="move the local oracle prices: random walk, a scenario, or a replay")
    add_chain_args(p)
    p.add_argument("--key", default=env("CROSSBOOK_FEEDER_KEY"),
                   help=f"key that sends the price updates (default dev:{FEEDER_DEV_INDEX}) "
                        "[$CROSSBOOK_FEEDER_KEY]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--scenario", default=env("CROSSBOOK_FEEDER_SCENARIO"),
                      help="move every (or --symbols) price, e.g. \"-40%% in 10m\" or "
                           "\"+15%% in 90s after 30s\" [$CROSSBOOK_FEEDER_SCENARIO]")
    mode.add_argument("--replay", default=env("CROSSBOOK_FEEDER_REPLAY"),
                      help="file of t_ms,price rows (1e8 scale) replayed for --symbols "
                           "[$CROSSBOOK_FEEDER_REPLAY]")
    p.add_argument("--symbols", default=env("CROSSBOOK_FEEDER_SYMBOLS"),
                   help="comma-separated feeds to move (default all) [$CROSSBOOK_FEEDER_SYMBOLS]")
    p.add_argument("--interval", type=float, default=float(env("CROSSBOOK_FEEDER_INTERVAL", "1") or 1),
                   help="seconds between updates [$CROSSBOOK_FEEDER_INTERVAL]")
    p.add_argument("--seed", type=int, default=int(env("CROSSBOOK_FEEDER_SEED", "1") or 1),
                   help="random-walk seed [$CROSSBOOK_FEEDER_SEED]")
    p.add_argument("--vol-ppm", type=int, default=int(env("CROSSBOOK_FEEDER_VOL_PPM", "500") or 0),
                   help="random walk: half-width of each step term in ppm; 0 holds prices still "
                        "[$CROSSBOOK_FEEDER_VOL_PPM]")
    add_service_args(p, "feeder", METRICS_PORT)
    p.set_defaults(func=run)


def _current_prices(rpc: str, feeds: dict[str, str]) -> dict[str, tuple[int, int]]:
    """symbol -> (1e8 price, feed decimals) as the feeds hold them now (a restart continues from
    there instead of jumping back to the listing price)."""
    from web3 import Web3

    from crossbook.chain.deploy import bind

    w3 = Web3(Web3.HTTPProvider(rpc))
    out = {}
    for sym, addr in feeds.items():
        feed = bind(w3, "SettableFeed", addr)
        dec = int(feed.functions.decimals().call())
        answer = int(feed.functions.latestRoundData().call()[1])
        out[sym] = (answer * 10**8 // 10**dec, dec)
    return out


class _Shifted:
    """A price path started ``offset_ms`` into the feeder's run (the feeder's clock counts
    from its own start, a re-anchored walk from the moment it was re-anchored)."""

    def __init__(self, inner: Any, offset_ms: int) -> None:
        self.inner = inner
        self.offset_ms = offset_ms

    def price_at(self, t_ms: int) -> int:
        """The inner path's price ``t_ms - offset_ms`` into it."""
        return int(self.inner.price_at(t_ms - self.offset_ms))


def _read_prices(w3: Any, feeds: dict[str, tuple[str, int]]) -> dict[str, int]:
    """symbol -> the feed's current answer at 1e8 scale."""
    from crossbook.chain.deploy import bind

    out = {}
    for sym, (addr, dec) in feeds.items():
        answer = int(bind(w3, "SettableFeed", addr).functions.latestRoundData().call()[1])
        out[sym] = answer * 10**8 // 10**dec
    return out


def build_paths(args: argparse.Namespace, start: dict[str, int]) -> dict[str, Any]:
    """symbol -> PricePath for the chosen mode."""
    from keeper.oracle_feeder import RandomWalk, ReplayPath, ScenarioPath

    if args.replay:
        path = ReplayPath.load(args.replay)
        return {s: path for s in start}
    if args.scenario:
        return {s: ScenarioPath.parse(p, args.scenario) for s, p in start.items()}
    return {s: RandomWalk(p, seed=args.seed + i, step_ms=max(1, int(args.interval * 1000)),
                          vol_ppm=args.vol_ppm, jump_ppm=0)
            for i, (s, p) in enumerate(sorted(start.items()))}


async def _main(args: argparse.Namespace) -> int:
    from crossbook.metrics import feeder_metrics, mark_ready
    from keeper.oracle_feeder import OracleFeeder, RandomWalk
    from settlement.relayer import connect

    dep, rpc = load_deployment(args)
    feeds = dict(dep.feeds)
    if args.symbols:
        want = {s.strip().upper().removesuffix("-PERP") for s in args.symbols.split(",") if s.strip()}
        unknown = want - set(feeds)
        if unknown:
            raise SystemExit(f"unknown feed(s) {sorted(unknown)}; have {sorted(feeds)}")
        feeds = {s: a for s, a in feeds.items() if s in want}
    now = await asyncio.to_thread(_current_prices, rpc, feeds)
    paths = build_paths(args, {s: p for s, (p, _) in now.items()})
    step_ms = max(1, int(args.interval * 1000))
    key = resolve_key(args.key, FEEDER_DEV_INDEX)
    feeder = OracleFeeder(connect(rpc), key, {s: (feeds[s], now[s][1]) for s in feeds}, paths,
                          interval_s=args.interval)
    m = feeder_metrics()
    stop = stop_event()
    mode = "replay " + args.replay if args.replay else ("scenario " + args.scenario if args.scenario
                                                          else f"random walk (seed {args.seed})")
    log.info("feeder: %s for %s every %.2fs", mode, ", ".join(sorted(feeds)), args.interval)
    mark_ready("feeder")
    from collections import deque

    from web3 import Web3

    walk = not (args.replay or args.scenario)
    read_w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10}))
    feed_info = {s: (feeds[s], now[s][1]) for s in feeds}
    # the last few prices this feeder pushed, per feed: a price on-chain that is none of them was
    # set by someone else (a read may lag our newest push by a block, hence a few, not one)
    recent: dict[str, deque[int]] = {s: deque(maxlen=4) for s in feeds}
    # OracleFeeder.run() only logs; step here ourselves to count what was pushed
    while not stop.is_set():
        try:
            if walk:
                # `crossbook oracle set ETH 2000` during a random walk: continue the walk from the
                # price it set instead of overwriting it a second later (the drill would never
                # reach the keeper otherwise)
                onchain = await asyncio.to_thread(_read_prices, read_w3, feed_info)
                t = feeder.clock() - feeder.t0
                for sym, price in onchain.items():
                    if recent[sym] and price not in recent[sym]:
                        log.info("%s was set to %s by someone else; the random walk continues from there",
                                 sym, price)
                        feeder.paths[sym] = _Shifted(RandomWalk(price, seed=args.seed + t, step_ms=step_ms,
                                                                vol_ppm=args.vol_ppm, jump_ppm=0), t)
                        feeder.last[sym] = price
                        recent[sym].append(price)
            pushed = await feeder.step(wait=False)
            for sym, price in pushed.items():
                recent[sym].append(price)
                m.updates.labels(symbol=sym).inc()
                m.price.labels(symbol=sym).set(price / 10**8)
            if pushed:
                log.info("prices %s", {s: p for s, p in pushed.items()})
        except Exception as err:  # noqa: BLE001 - a node hiccup must not end the feeder
            m.failures.inc()
            log.warning("feeder step failed: %s", err)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.interval)
    log.info("feeder stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook feeder``."""
    from crossbook.cli import _run_async

    start_service(args)
    rc: int = _run_async(_main(args))
    return rc
