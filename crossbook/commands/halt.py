"""``crossbook halt --reason TEXT`` / ``crossbook halt --resume``: the operator's trading halt.

While halted the matcher refuses new and replacement orders (``HALTED``, with the reason);
cancels, withdrawals, chain events and settlement go on (docs/api.md, the ``halt`` op). The
watcher halts trading by itself after a chain reorg deeper than its confirmation depth.
"""
from __future__ import annotations

import argparse
import asyncio

from crossbook.commands.common import default_matcher_url, env


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``halt``."""
    p = sub.add_parser("halt", help="halt trading on the matcher (cancels still work), or resume it")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--reason", help="why (at most 200 characters): every refused order carries it")
    what.add_argument("--resume", action="store_true", help="resume trading")
    p.add_argument("--cancel-orders", action="store_true",
                   help="with --reason: also cancel every resting order (reason HALT), so that "
                        "none trades at the prices of before the halt when trading resumes")
    p.add_argument("--matcher-url", default=None,
                   help="matcher websocket URL [$CROSSBOOK_MATCHER_URL, else the running stack's]")
    p.add_argument("--operator-token", default=env("CROSSBOOK_OPERATOR_TOKEN"),
                   help="the matcher's operator token [$CROSSBOOK_OPERATOR_TOKEN, else the stack's "
                        "<home>/secrets.json]")
    p.set_defaults(func=run)


def _stack_token() -> str | None:
    """The operator token `crossbook up` generated for this state dir, if any."""
    from crossbook.paths import state_dir
    from crossbook.supervisor import read_secrets

    try:
        return read_secrets(state_dir())["operator_token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook halt``."""
    from crossbook.sdk.client import Client
    from crossbook.sdk.errors import Rejected

    token = args.operator_token or _stack_token()
    if not token:
        raise SystemExit("--operator-token (or $CROSSBOOK_OPERATOR_TOKEN) is required: no stack "
                         "secrets.json in the state dir")
    reason = "" if args.resume else str(args.reason).strip()
    if not args.resume and not reason:
        raise SystemExit("--reason must not be empty")
    if args.resume and args.cancel_orders:
        raise SystemExit("--cancel-orders goes with --reason (a halt)")
    url = args.matcher_url or default_matcher_url()

    async def go() -> str | None:
        client = await Client.connect(url)
        try:
            await client.request("halt", token=token, reason=reason,
                                 **({"cancel_orders": True} if args.cancel_orders else {}))
            return (await client.status()).get("halted")
        finally:
            await client.close()

    try:
        halted = asyncio.run(go())
    except Rejected as err:
        raise SystemExit(f"the matcher refused: {err}") from None
    except OSError as err:
        raise SystemExit(f"cannot reach the matcher at {url}: {err}") from None
    print(f"trading halted: {halted}" if halted else "trading resumed")
    return 0
