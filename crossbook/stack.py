"""`crossbook up`: bring the exchange up on the embedded local chain (or an existing RPC)."""
from __future__ import annotations

import binascii
import os
import signal
import sys
import threading
from pathlib import Path

from eth_account import Account
from web3 import Web3

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.deploy import Deployment, bind, deploy_exchange, error_decoder
from crossbook.chain.devkeys import ADMIN, FIRST_USER, OPERATOR, dev_address, dev_key
from crossbook.chain.sender import TxSender
from crossbook.config import DEFAULT_SPEC, ExchangeSpec
from crossbook.paths import ANVIL_STATE_FILE, state_dir

DEMO_USERS = 4


class SetupError(Exception):
    """A misconfiguration `crossbook up` reports in one line instead of a traceback."""


def _say(msg: str) -> None:
    print(msg, flush=True)


def funded_address(w3: Web3, key: str, who: str, var: str, rpc_url: str) -> str:
    """The address of ``key`` (from ``$var``, signing for ``who``); SetupError when it is not a
    private key or its account holds no gas (its first transaction would fail)."""
    try:
        address = str(Account.from_key(key).address)
    except (ValueError, TypeError, binascii.Error) as err:
        raise SetupError(f"{who}'s key (${var}) is not a private key: {err}") from err
    if w3.eth.get_balance(Web3.to_checksum_address(address)) == 0:
        raise SetupError(f"{who}'s account {address} (${var}) has no gas on {rpc_url}: fund it")
    return address


def ensure_deployment(w3: Web3, rpc_url: str, home: Path, fresh: bool,
                      spec: ExchangeSpec = DEFAULT_SPEC) -> Deployment:
    """Reuse the saved deployment if its contracts are still on this chain, else deploy anew."""
    path = home / "deployment.json"
    if path.exists() and not fresh:
        try:
            dep = Deployment.load(path)
        except (ValueError, TypeError) as err:  # not JSON, or not a deployment's fields
            raise SetupError(f"{path} is not a deployment file ({err}); fix or remove it (with "
                             "`--fresh`, start over)") from err
        if dep.chain_id == w3.eth.chain_id and len(w3.eth.get_code(Web3.to_checksum_address(dep.clearinghouse))) > 0:
            _say(f"reusing deployment from {path}")
            return dep
        _say("saved deployment not found on this chain; deploying again")
    admin_key = os.environ.get("CROSSBOOK_ADMIN_KEY", dev_key(ADMIN))
    operator = os.environ.get("CROSSBOOK_OPERATOR", dev_address(OPERATOR))
    funded_address(w3, admin_key, "the deployer", "CROSSBOOK_ADMIN_KEY", rpc_url)
    _say("deploying contracts ...")
    dep = deploy_exchange(w3, admin_key, operator, rpc_url, spec)
    _fund_demo_users(w3, dep, admin_key, spec)
    dep.save(path)
    return dep


def _fund_demo_users(w3: Web3, dep: Deployment, admin_key: str, spec: ExchangeSpec) -> None:
    """Mint test collateral to the demo accounts so a newcomer can trade at once."""
    tx = TxSender(w3, admin_key, error_decoder())
    amounts = {spec.quote_symbol: 1_000_000 * 10**6}
    amounts.update({c.symbol: 100 * 10**c.decimals for c in spec.collaterals})
    for i in range(FIRST_USER, FIRST_USER + DEMO_USERS):
        for sym, amount in amounts.items():
            tx.transact(bind(w3, "TestToken", dep.tokens[sym]).functions.mint(dev_address(i), amount))
    _say(f"minted test collateral to {DEMO_USERS} demo accounts")


def print_deployment(dep: Deployment, rpc_url: str) -> None:
    """Print what an operator needs to find everything."""
    _say(f"chain      {rpc_url} (chain id {dep.chain_id})")
    _say(f"clearinghouse {dep.clearinghouse}")
    _say(f"oracle        {dep.oracle}")
    for sym, addr in dep.tokens.items():
        _say(f"token {sym:<7} {addr}")
    for sym, addr in dep.feeds.items():
        _say(f"feed  {sym:<7} {addr}")
    _say(f"demo accounts {', '.join(dev_address(i) for i in range(FIRST_USER, FIRST_USER + DEMO_USERS))}")


def run_stack(rpc_url: str | None = None, home: Path | None = None, port: int = 8545,
              fresh: bool = False) -> int:
    """Start (or attach to) the chain, deploy if needed, print addresses, run until Ctrl-C."""
    home = home or state_dir()
    home.mkdir(parents=True, exist_ok=True)
    node: AnvilNode | None = None
    if fresh:
        for f in (ANVIL_STATE_FILE, "deployment.json"):
            (home / f).unlink(missing_ok=True)
    if rpc_url is None:
        node = AnvilNode(port=port, state_file=home / ANVIL_STATE_FILE).start()
        rpc_url = node.url
        _say(f"anvil started on {rpc_url} (state in {home / ANVIL_STATE_FILE})")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        w3 = Web3(Web3.HTTPProvider(rpc_url))
        dep = ensure_deployment(w3, rpc_url, home, fresh)
        print_deployment(dep, rpc_url)
        _say("ready — Ctrl-C to stop")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            _say("stopping anvil (saving chain state) ...")
            node.stop()
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run_stack())
