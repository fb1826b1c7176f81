"""`crossbook` — the single entry point: run the stack, benchmarks, and account tools."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = {
    "gas": "bench.gas_bench",
    "intake": "bench.intake_bench",
    "matcher": "bench.matcher_bench",
    "recovery": "bench.recovery_bench",
    "settle": "bench.settle_bench",
    "ws": "bench.ws_bench",
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
    from crossbook.stack import run_stack

    return run_stack(rpc_url=args.rpc_url, home=Path(args.home) if args.home else None,
                     port=args.port, fresh=args.fresh)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="crossbook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="run one benchmark; prints its figures as JSON on the last line")
    b.add_argument("name", help=f"one of: {', '.join(sorted(BENCHMARKS))}")
    b.set_defaults(func=_cmd_bench)

    u = sub.add_parser("up", help="start the exchange on a local anvil (or --rpc-url) and print its addresses")
    u.add_argument("--rpc-url", help="use an existing chain instead of starting anvil")
    u.add_argument("--port", type=int, default=8545, help="anvil port (default 8545)")
    u.add_argument("--home", help="state directory (default .crossbook, or $CROSSBOOK_HOME)")
    u.add_argument("--fresh", action="store_true", help="discard saved chain state and redeploy")
    u.set_defaults(func=_cmd_up)
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
