"""What the account and service commands share: flags with environment fallbacks, loading the
deployment, integer unit parsing, and progress output while a command waits."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from crossbook.chain.deploy import Deployment

T = TypeVar("T")


def env(name: str, default: str | None = None) -> str | None:
    """An environment-variable fallback for a flag (docker-compose configures services so)."""
    return os.environ.get(name, default)


def default_deployment() -> str:
    """``$CROSSBOOK_DEPLOYMENT``, else the file ``crossbook up`` writes into the state dir."""
    from crossbook.paths import state_dir

    return env("CROSSBOOK_DEPLOYMENT") or str(state_dir() / "deployment.json")


def default_matcher_url() -> str:
    """``$CROSSBOOK_MATCHER_URL``, else the matcher of the stack running in the state dir (its
    ``stack.json``: `crossbook up --matcher-port 0` picks a free port), else the default port."""
    from crossbook.paths import state_dir
    from crossbook.supervisor import running_stack

    url = env("CROSSBOOK_MATCHER_URL")
    if url:
        return url
    try:
        stack = running_stack(state_dir())
        return str(stack["services"]["matcher"]["urls"]["ws"]) if stack else "ws://127.0.0.1:8765"
    except (KeyError, TypeError):
        return "ws://127.0.0.1:8765"


def add_chain_args(p: argparse.ArgumentParser) -> None:
    """``--deployment`` and ``--rpc-url``."""
    p.add_argument("--deployment", default=None,
                   help="deployment JSON written by `crossbook up` "
                        "[$CROSSBOOK_DEPLOYMENT, else $CROSSBOOK_HOME/deployment.json]")
    p.add_argument("--rpc-url", default=env("CROSSBOOK_RPC_URL"),
                   help="JSON-RPC endpoint (default: the deployment's) [$CROSSBOOK_RPC_URL]")


def add_service_args(p: argparse.ArgumentParser, service: str, metrics_port: int) -> None:
    """Logging and metrics flags every long-running service has."""
    p.add_argument("--log-level", default=env("CROSSBOOK_LOG_LEVEL", "INFO"),
                   help="logging level [$CROSSBOOK_LOG_LEVEL]")
    p.add_argument("--log-format", default=env("CROSSBOOK_LOG_FORMAT", "json"), choices=("json", "text"),
                   help="json lines (default) or text [$CROSSBOOK_LOG_FORMAT]")
    p.add_argument("--metrics-port", type=int,
                   default=int(env("CROSSBOOK_METRICS_PORT", str(metrics_port)) or 0),
                   help=f"Prometheus /metrics port, 0 to disable (default {metrics_port}) "
                        "[$CROSSBOOK_METRICS_PORT]")
    p.add_argument("--metrics-host", default=env("CROSSBOOK_METRICS_HOST", "127.0.0.1"),
                   help="address /metrics listens on [$CROSSBOOK_METRICS_HOST]")
    p.set_defaults(service_name=service)


def start_service(args: argparse.Namespace) -> None:
    """Structured logging and the metrics exporter, from :func:`add_service_args` flags."""
    from crossbook.logs import setup_logging
    from crossbook.metrics import start_exporter

    setup_logging(args.service_name, args.log_level, args.log_format)
    if args.metrics_port:
        try:
            start_exporter(args.metrics_port, args.metrics_host)
        except OSError as err:  # typically the same service of a running stack holds the port
            raise SystemExit(f"{args.service_name}: cannot serve /metrics on {args.metrics_host}:{args.metrics_port} "
                             f"({err.strerror or err}; a running stack's {args.service_name}?): pass "
                             "--metrics-port 0 to run without /metrics, or another port") from err


def load_deployment(args: argparse.Namespace) -> tuple[Deployment, str]:
    """The deployment and the RPC URL to use (flag, env, or the deployment's own)."""
    path = Path(args.deployment or default_deployment())
    if not path.exists():
        raise SystemExit(f"no deployment at {path}: run `crossbook up` first, or pass --deployment "
                         "(or set $CROSSBOOK_DEPLOYMENT / $CROSSBOOK_HOME)")
    dep = Deployment.load(path)
    return dep, args.rpc_url or dep.rpc_url


def parse_units(text: str, decimals: int) -> int:
    """``"12.5"`` with 6 decimals -> 12_500_000, in integers only (no float rounding)."""
    s = text.strip().replace("_", "")
    neg = s.startswith("-")
    whole, _, frac = s.lstrip("+-").partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a decimal number: {text!r}")
    if len(frac) > decimals:
        if frac[decimals:].strip("0"):
            raise ValueError(f"{text!r} has more than {decimals} decimals")
        frac = frac[:decimals]
    value = int(whole or "0") * 10**decimals + int((frac + "0" * decimals)[:decimals] or "0")
    return -value if neg else value


def format_units(value: int, decimals: int, places: int | None = None) -> str:
    """Integer atoms as a decimal string (``places`` truncates the fraction for display)."""
    sign = "-" if value < 0 else ""
    v = abs(value)
    whole, frac = divmod(v, 10**decimals)
    if decimals == 0:
        return f"{sign}{whole:,}"
    f = str(frac).rjust(decimals, "0")
    if places is not None:
        f = f[:places]
    f = f.rstrip("0") if places is None else f
    return f"{sign}{whole:,}" + (f".{f}" if f else "")


class Progress:
    """A one-line status on stderr while a command waits (rewritten in place on a terminal,
    one line every few seconds otherwise so logs stay readable)."""

    def __init__(self, what: str, stream: Any = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_print = 0.0
        self._frames = "|/-\\"
        self._n = 0

    def update(self, detail: str = "") -> None:
        """Show that we are still waiting (and on what)."""
        now = time.monotonic()
        el = now - self.t0
        if self.tty:
            self._n += 1
            self.stream.write(f"\r{self._frames[self._n % 4]} {self.what} {detail} ({el:.0f}s)\033[K")
            self.stream.flush()
        elif now - self._last_print >= 5 or self._last_print == 0:
            self._last_print = now
            self.stream.write(f"... {self.what} {detail} ({el:.0f}s)\n")
            self.stream.flush()

    def done(self, detail: str = "done") -> None:
        """Finish the line."""
        el = time.monotonic() - self.t0
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"{self.what}: {detail} ({el:.1f}s)\n")
        self.stream.flush()


def wait_for(cond: Callable[[], T | None], what: str, timeout: float, interval: float = 0.25,
             detail: Callable[[], str] | None = None) -> T:
    """Poll ``cond`` until it returns a non-None value, showing progress; TimeoutError after
    ``timeout`` seconds."""
    prog = Progress(what)
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got is not None:
            prog.done()
            return got
        if time.monotonic() > deadline:
            prog.done("timed out")
            raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
        prog.update(detail() if detail else "")
        time.sleep(interval)


def resolve_key(text: str | None, default_index: int) -> str:
    """A private key from ``--key``: hex, ``dev:N`` (anvil dev account N), or the default dev
    account (only meaningful on a local chain)."""
    from crossbook.chain.devkeys import dev_key

    if not text:
        return dev_key(default_index)
    if text.startswith("dev:"):
        return dev_key(int(text[4:]))
    return text if text.startswith("0x") else "0x" + text


__all__ = ["Progress", "add_chain_args", "add_service_args", "default_deployment", "default_matcher_url", "env",
           "format_units",
           "load_deployment", "parse_units", "resolve_key", "start_service", "wait_for"]


def transact(sender: Any, fn: Any, what: str, timeout: float = 120.0) -> Any:
    """Send a contract call with ``sender`` (a :class:`crossbook.chain.sender.TxSender`) and
    show progress until it is mined; a mined revert raises ``TxFailed``."""
    from web3.exceptions import TransactionNotFound

    from crossbook.chain.sender import TxFailed

    h = sender.submit({"to": fn.address, "data": fn._encode_transaction_data(), "value": 0})

    def mined() -> Any:
        try:
            return sender.w3.eth.get_transaction_receipt(h)
        except TransactionNotFound:
            return None

    receipt = wait_for(mined, f"{what} (tx 0x{h.hex()[:12]}..)", timeout, interval=0.1,
                       detail=lambda: "waiting to be mined")
    if receipt["status"] != 1:
        raise TxFailed(receipt)
    return receipt


def chain_client(args: argparse.Namespace) -> Any:
    """A synchronous :class:`ClearinghouseClient` for the deployment."""
    from web3 import Web3

    from crossbook.chain.clearinghouse import ClearinghouseClient

    dep, rpc = load_deployment(args)
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    return ClearinghouseClient(w3, dep)


def asset_of(symbol: str) -> tuple[int, int, str]:
    """``(asset id, decimals, symbol)`` of a collateral symbol (case-insensitive)."""
    from crossbook.config import DEFAULT_SPEC

    s = symbol.upper()
    if s == DEFAULT_SPEC.quote_symbol:
        return 0, 6, s
    for i, c in enumerate(DEFAULT_SPEC.collaterals):
        if c.symbol == s:
            return i + 1, c.decimals, s
    have = [DEFAULT_SPEC.quote_symbol] + [c.symbol for c in DEFAULT_SPEC.collaterals]
    raise SystemExit(f"unknown asset {symbol!r}; one of {', '.join(have)}")
