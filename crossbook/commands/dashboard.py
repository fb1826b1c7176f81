"""`crossbook dashboard`: serve the live web dashboard (crossbook/dashboard/)."""
from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``dashboard`` subcommand."""
    from crossbook.cli import _env, _service_common

    d = sub.add_parser("dashboard", help="serve the live web dashboard (markets, books, trades, "
                                         "settlement lag, insurance fund, liquidations, account risk)")
    _service_common(d, service="dashboard")
    d.add_argument("--host", default=_env("CROSSBOOK_DASHBOARD_HOST", "127.0.0.1"),
                   help="listen address [$CROSSBOOK_DASHBOARD_HOST]")
    d.add_argument("--port", type=int, default=int(_env("CROSSBOOK_DASHBOARD_PORT", "8080") or 8080),
                   help="listen port [$CROSSBOOK_DASHBOARD_PORT]")
    d.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from crossbook.cli import _run_async, _service_setup
    from crossbook.dashboard.feed import DashboardFeed
    from crossbook.dashboard.server import serve

    dep, rpc = _service_setup(args)
    _run_async(serve(DashboardFeed(args.matcher_url, dep, rpc), args.host, args.port))
    return 0
