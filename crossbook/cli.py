"""`crossbook` — the single entry point: run the stack, benchmarks, and account tools."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = {
    "fill-log": "bench.fill_log_bench",
    "gas": "bench.gas_bench",
    "intake": "bench.intake_bench",
    "keeper": "bench.keeper_bench",
    "matcher": "bench.matcher_bench",
    "recovery": "bench.recovery_bench",
    "requote": "bench.requote_bench",
    "settle": "bench.settle_bench",
    "ws": "bench.ws_bench",
    "ws-path": "bench.ws_path_bench",
}


def _cmd_bench(args: argparse.Namespace) -> int:
    module_name = BENCHMARKS.get(args.name)
    if module_name is None:
        print(f"unknown benchmark {args.name!r}; choose one of: {', '.join(sorted(BENCHMARKS))}",
              file=sys.stderr)
        return 2
    run: Callable[..., dict[str, Any]] = importlib.import_module(module_name).run
    figures = run()
    # The last line is the machine-readable result; anything printed before it is progress.
    print(json.dumps(figures, sort_keys=True))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from crossbook.supervisor import run_up

    return run_up(args)


def _env(name: str, default: str | None = None) -> str | None:
    """An environment-variable fallback for a flag (docker-compose configures services so)."""
    return os.environ.get(name, default)


def _service_common(p: argparse.ArgumentParser, matcher_url: bool = True, service: str = "",
                    metrics_port: int = 0) -> None:
    p.add_argument("--deployment", default=_env("CROSSBOOK_DEPLOYMENT"),
                   help="deployment JSON written by `crossbook up` [$CROSSBOOK_DEPLOYMENT]")
    p.add_argument("--rpc-url", default=_env("CROSSBOOK_RPC_URL"),
                   help="JSON-RPC endpoint (default: the deployment's) [$CROSSBOOK_RPC_URL]")
    if matcher_url:
        p.add_argument("--matcher-url", default=_env("CROSSBOOK_MATCHER_URL", "ws://127.0.0.1:8765"),
                       help="matcher websocket URL [$CROSSBOOK_MATCHER_URL]")
    from crossbook.commands.common import add_service_args

    add_service_args(p, service, metrics_port)  # --log-level, --log-format, --metrics-port/-host


def _service_setup(args: argparse.Namespace) -> tuple[Any, str]:
    """Logging, the deployment and the RPC URL shared by every service."""
    from crossbook.chain.deploy import Deployment

    from crossbook.commands.common import start_service

    start_service(args)  # JSON-lines logs (crossbook/logs.py) and the /metrics exporter
    if not args.deployment:
        raise SystemExit("--deployment (or $CROSSBOOK_DEPLOYMENT) is required")
    dep = Deployment.load(Path(args.deployment))
    return dep, args.rpc_url or dep.rpc_url


def _run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cmd_matcher(args: argparse.Namespace) -> int:
    from settlement.services import MatcherOptions, run_matcher

    if args.busy_poll_us < 0:
        raise SystemExit("--busy-poll-us must be >= 0 (0: off)")
    dep, rpc = _service_setup(args)
    if not args.journal_dir:
        raise SystemExit("--journal-dir (or $CROSSBOOK_JOURNAL_DIR) is required")
    _run_async(run_matcher(MatcherOptions(
        deployment=dep, rpc_url=rpc, journal_dir=Path(args.journal_dir), host=args.host,
        port=args.port, operator_token=args.operator_token, stream_token=args.stream_token,
        snapshot_every=args.snapshot_every, snapshot_interval_s=args.snapshot_interval,
        journal_segment_mb=args.journal_segment_mb,
        max_unsettled_per_account=args.max_unsettled_per_account,
        max_unsettled_global=args.max_unsettled_global, max_open_orders=args.max_open_orders,
        max_nonce_words=args.max_nonce_words, busy_poll_us=args.busy_poll_us)))
    return 0


def _cmd_relayer(args: argparse.Namespace) -> int:
    from settlement.services import RelayerOptions, run_relayer

    dep, rpc = _service_setup(args)
    if not args.operator_key:
        raise SystemExit("--operator-key (or $CROSSBOOK_OPERATOR_KEY) is required")
    tuning = {k: v for k, v in (("max_items", args.max_items), ("max_age_s", args.max_age),
                                ("max_gas", args.max_gas), ("max_in_flight", args.in_flight))
              if v is not None}
    rc: int = _run_async(run_relayer(RelayerOptions(
        deployment=dep, rpc_url=rpc, matcher_url=args.matcher_url, operator_key=args.operator_key,
        stream_token=args.stream_token, **tuning)))
    return rc


def _cmd_watcher(args: argparse.Namespace) -> int:
    from settlement.services import WatcherOptions, run_watcher

    dep, rpc = _service_setup(args)
    if not args.operator_token:
        raise SystemExit("--operator-token (or $CROSSBOOK_OPERATOR_TOKEN) is required")
    rc: int = _run_async(run_watcher(WatcherOptions(
        deployment=dep, rpc_url=rpc, matcher_url=args.matcher_url,
        operator_token=args.operator_token, confirmations=args.confirmations,
        poll_interval_s=args.poll_interval,
        state_path=Path(args.state) if args.state else None)))
    return rc


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="crossbook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="run one benchmark; prints its figures as JSON on the last line")
    b.add_argument("name", help=f"one of: {', '.join(sorted(BENCHMARKS))}")
    b.set_defaults(func=_cmd_bench)

    from crossbook.supervisor import add_up_args

    u = sub.add_parser("up", help="start the whole stack (anvil or --rpc-url, contracts, matcher, relayer, "
                                  "watcher, keeper, feeder, bots, dashboard) and supervise it until Ctrl-C")
    add_up_args(u)
    u.set_defaults(func=_cmd_up)

    m = sub.add_parser("matcher", help="run the matcher: recover from the journal, serve the websocket API")
    _service_common(m, matcher_url=False, service="matcher", metrics_port=9101)
    m.add_argument("--journal-dir", default=_env("CROSSBOOK_JOURNAL_DIR"),
                   help="journal + snapshots directory [$CROSSBOOK_JOURNAL_DIR]")
    m.add_argument("--host", default=_env("CROSSBOOK_MATCHER_HOST", "127.0.0.1"),
                   help="listen address [$CROSSBOOK_MATCHER_HOST]")
    m.add_argument("--port", type=int, default=int(_env("CROSSBOOK_MATCHER_PORT", "8765") or 8765),
                   help="listen port [$CROSSBOOK_MATCHER_PORT]")
    m.add_argument("--operator-token", default=_env("CROSSBOOK_OPERATOR_TOKEN"),
                   help="token the watcher's `chain` op must carry [$CROSSBOOK_OPERATOR_TOKEN]")
    m.add_argument("--stream-token", default=_env("CROSSBOOK_STREAM_TOKEN"),
                   help="token the relayer's `stream` op must carry [$CROSSBOOK_STREAM_TOKEN]")
    m.add_argument("--snapshot-every", type=int, default=50_000, help="journaled commands between snapshots")
    m.add_argument("--snapshot-interval", type=float, default=60.0, help="seconds between snapshots")
    m.add_argument("--journal-segment-mb", type=int, default=256,
                   help="size at which the journal's active file is sealed and a new one begun; "
                        "sealed files older than the oldest kept snapshot are deleted")
    m.add_argument("--max-unsettled-per-account", type=int, default=10_000,
                   help="unsettled items per sub-account before risk-increasing orders are refused")
    m.add_argument("--max-unsettled-global", type=int, default=1_000_000,
                   help="unsettled items overall before risk-increasing orders are refused")
    m.add_argument("--max-open-orders", type=int, default=1_000, help="open orders per sub-account")
    m.add_argument("--max-nonce-words", type=int, default=1_000_000,
                   help="replay protection remembered per owner, in words of 32 nonces (~100 bytes "
                        "each) until their orders expire; beyond it orders get TOO_MANY_NONCES")
    m.add_argument("--busy-poll-us", type=int, default=0,
                   help="keep polling the sockets this long after each request instead of sleeping "
                        "(lower ack latency for a matcher on a core of its own; 0: off)")
    m.set_defaults(func=_cmd_matcher)

    r = sub.add_parser("relayer", help="settle the matcher's sequenced stream on-chain")
    _service_common(r, service="relayer", metrics_port=9102)
    r.add_argument("--operator-key", default=_env("CROSSBOOK_OPERATOR_KEY"),
                   help="private key holding OPERATOR_ROLE [$CROSSBOOK_OPERATOR_KEY]")
    r.add_argument("--stream-token", default=_env("CROSSBOOK_STREAM_TOKEN"),
                   help="the matcher's stream token [$CROSSBOOK_STREAM_TOKEN]")
    # unset options keep settlement's defaults (settlement.batcher.BatchLimits, RelayerConfig)
    r.add_argument("--max-items", type=int, help="items per batch [2000]")
    r.add_argument("--max-age", type=float, help="seconds before a partial batch is sent [0.25]")
    r.add_argument("--max-gas", type=int,
                   help="gas a batch is expected to use [14500000: two share a 30M block]")
    r.add_argument("--in-flight", type=int, help="pipelined settle transactions [8]")
    r.set_defaults(func=_cmd_relayer)

    w = sub.add_parser("watcher", help="forward confirmed clearinghouse events to the matcher")
    _service_common(w, service="watcher", metrics_port=9103)
    w.add_argument("--operator-token", default=_env("CROSSBOOK_OPERATOR_TOKEN"),
                   help="the matcher's operator token [$CROSSBOOK_OPERATOR_TOKEN]")
    w.add_argument("--confirmations", type=int,
                   default=int(_env("CROSSBOOK_CONFIRMATIONS", "1") or 1),
                   help="blocks a log must be buried under before it is forwarded [$CROSSBOOK_CONFIRMATIONS]")
    w.add_argument("--poll-interval", type=float, default=0.25, help="seconds between chain polls")
    w.add_argument("--state", default=_env("CROSSBOOK_WATCHER_STATE"),
                   help="reorg-detection state file (optional) [$CROSSBOOK_WATCHER_STATE]")
    w.set_defaults(func=_cmd_watcher)

    from crossbook.commands import register as _register_commands

    _register_commands(sub)  # keeper, feeder, deposit, withdraw, account, markets, oracle
    from crossbook.commands import reconcile as _reconcile

    _reconcile.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        print(f"\nstopped after {time.monotonic() - started:.0f}s", file=sys.stderr)
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
