"""`crossbook mm --bot N`: the demo market maker (examples/market_maker.py) as dev account
``FIRST_USER + N``, depositing its own collateral first when its sub-account has none."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from types import ModuleType

log = logging.getLogger("crossbook.mm")

DEMO_DEPOSIT_USD = 100_000


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``mm`` subcommand."""
    from crossbook.cli import _env, _service_common

    p = sub.add_parser("mm", help="run a demo market maker (examples/market_maker.py) as dev account "
                                  "FIRST_USER + --bot; deposits its collateral if it has none")
    _service_common(p, service="mm")
    p.add_argument("--bot", type=int, default=int(_env("CROSSBOOK_MM_BOT", "0") or 0),
                   help="bot index: uses dev account FIRST_USER + BOT [$CROSSBOOK_MM_BOT]")
    p.add_argument("--sub", type=int, default=0, help="sub-account to quote from (default 0)")
    p.add_argument("--deposit", type=int, default=DEMO_DEPOSIT_USD,
                   help=f"USD to deposit when the sub-account is empty (default {DEMO_DEPOSIT_USD})")
    p.add_argument("--half-spread", default="0.001", help="half spread, fraction (default 0.001)")
    p.add_argument("--notional", default="1000", help="USD per quote (default 1000)")
    p.add_argument("--max-position", default="10000", help="max position per market, USD (default 10000)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=_cmd_mm)


def load_market_maker() -> ModuleType:
    """examples/market_maker.py as a module (the demo bot *is* the example)."""
    from crossbook.paths import REPO_ROOT

    path = REPO_ROOT / "examples" / "market_maker.py"
    spec = importlib.util.spec_from_file_location("crossbook_example_market_maker", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def ensure_collateral(chain: "object", sub: int, usd: int) -> None:
    """Deposit ``usd`` of the quote token (minting test tokens on a local chain if the wallet
    holds too few) when the sub-account has no quote balance."""
    from crossbook.sdk.chain import ChainAccount

    assert isinstance(chain, ChainAccount)
    if chain.client.quote_balance(chain.address, sub) > 0:
        return
    sym = chain.spec.quote_symbol
    amount = usd * 10**6
    if chain.token_balance(sym) < amount:
        chain.mint_test_tokens(sym, amount)
    chain.deposit(sym, amount, sub)
    log.info("deposited %d %s into %s/%d", usd, sym, chain.address, sub)


def _cmd_mm(args: argparse.Namespace) -> int:
    from crossbook.chain.devkeys import FIRST_USER, dev_key
    from crossbook.cli import _run_async, _service_setup
    from crossbook.eip712 import Signer
    from crossbook.sdk.chain import ChainAccount

    dep, rpc = _service_setup(args)
    key = dev_key(FIRST_USER + args.bot)
    chain = ChainAccount.from_deployment(dep, key, rpc)
    ensure_collateral(chain, args.sub, args.deposit)
    mm = load_market_maker()
    cfg = mm.config_from_args(mm.build_parser().parse_args([
        "--sub", str(args.sub), "--half-spread", args.half_spread, "--notional", args.notional,
        "--max-position", args.max_position]))
    signer = Signer(key)
    from crossbook.metrics import mark_ready

    # ready = quoting (not merely started): the supervisor waits on this gauge before the
    # dashboard, and tests before trading against the bots
    _run_async(mm.run(args.matcher_url, signer, cfg, None, args.duration, on_quoting=lambda: mark_ready("mm")))
    return 0
