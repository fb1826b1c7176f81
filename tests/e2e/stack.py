"""End-to-end harness: a real anvil with the real contracts, and the real services
(`crossbook matcher | relayer | watcher`) as subprocesses on loopback ports, driven by real
websocket clients. Nothing is mocked.

Verification helpers read the contract's events and the settle calldata from the chain, and the
matcher's journal from disk (after the matcher stopped), so "exactly once, in order" and "the
shadow ledger equals the chain" are checked against the two sources of truth themselves.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from web3 import Web3
from websockets.asyncio.client import connect

from crossbook.chain.anvil import AnvilNode, free_port, rpc_call
from crossbook.chain.devkeys import OPERATOR, dev_address, dev_key
from crossbook.chain.local_exchange import LocalExchange
from crossbook.eip712 import Signer
from crossbook.margin import SubAccount
from crossbook.paths import REPO_ROOT
from crossbook.protocol_types import Item, Order
from crossbook.reconcile import (canon, chain_events, check_ledger, check_tiling, ledger_accounts,
                                 reconcile_stack, recovered_engine, replay_journal,
                                 settled_batches)
from matcher.engine import Engine
from matcher.sessions import login_digest
from settlement.events import ChainBatchSettled
from tests.ws.helpers import Client

OPERATOR_TOKEN = "e2e-operator-token"
BIG = 1_000_000  # generous lag/open-order bounds: these tests are about settlement, not limits


class Stack:
    """anvil + deployed exchange + the three services (each started on demand)."""

    def __init__(self, tmp: Path, block_time: int = 1) -> None:
        self.tmp = tmp
        # 60M gas blocks: room for the relayer's pipelined batches in one-second blocks
        self.node = AnvilNode(gas_limit=60_000_000).start()
        self.ex = LocalExchange(self.node)
        self.block_time = block_time
        self.dep_path = tmp / "deployment.json"
        self.ex.deployment.save(self.dep_path)
        self.journal_dir = tmp / "matcher"
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.restarts: dict[str, int] = {}

    # --- chain ------------------------------------------------------------------------------
    def interval_mining(self) -> None:
        """From now on a block every ``block_time`` seconds (settle txs wait in the mempool, so
        kills land between send and receipt too)."""
        rpc_call(self.node.url, "evm_setIntervalMining", [self.block_time])

    @property
    def w3(self) -> Web3:
        """Synchronous web3 on the anvil."""
        return self.ex.w3

    # --- services ---------------------------------------------------------------------------
    def grant_operator(self, index: int) -> str:
        """Give dev account ``index`` OPERATOR_ROLE too (a second relayer); returns its key."""
        role = Web3.keccak(text="OPERATOR_ROLE")
        self.ex.admin.transact(self.ex.client.contract.functions.grantRole(role, dev_address(index)))
        return dev_key(index)

    def _spawn(self, name: str, args: list[str], cmd: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        n = self.restarts.get(name, 0)
        self.restarts[name] = n + 1
        log = self.tmp / f"{name}.{n}.log"
        self.logs[name] = log
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CROSSBOOK_DEPLOYMENT": str(self.dep_path),
               "CROSSBOOK_RPC_URL": self.node.url, "CROSSBOOK_MATCHER_URL": self.url,
               "CROSSBOOK_OPERATOR_TOKEN": OPERATOR_TOKEN, "CROSSBOOK_OPERATOR_KEY": dev_key(OPERATOR),
               "CROSSBOOK_JOURNAL_DIR": str(self.journal_dir),
               # no /metrics exporters: fixed default ports would collide between services here
               "CROSSBOOK_METRICS_PORT": "0", **(env or {})}
        with open(log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "crossbook.cli", cmd or name, *args], cwd=REPO_ROOT,
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs[name] = p
        return p

    def start_matcher(self) -> None:
        """Start the matcher and wait until it accepts connections."""
        self._spawn("matcher", ["--port", str(self.port), "--max-unsettled-per-account", str(BIG),
                                "--max-open-orders", str(BIG), "--snapshot-every", "4000"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.procs["matcher"].poll() is not None:
                raise RuntimeError("matcher exited:\n" + self.logs["matcher"].read_text()[-3000:])
            try:
                asyncio.run(self.status())
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("matcher did not come up")

    def start_relayer(self, *extra: str, name: str = "relayer",
                      key: str | None = None) -> subprocess.Popen[bytes]:
        """Start a relayer (default batch limits unless ``extra`` flags say otherwise); ``key``
        overrides the operator key, ``name`` tells several apart."""
        env = {"CROSSBOOK_OPERATOR_KEY": key} if key else None
        return self._spawn(name, list(extra), "relayer", env)

    def start_watcher(self, name: str = "watcher") -> subprocess.Popen[bytes]:
        """Start a watcher (1 confirmation, fast polling); ``name`` tells several apart."""
        return self._spawn(name, ["--confirmations", "1", "--poll-interval", "0.1"], "watcher")

    def kill9(self, name: str) -> None:
        """SIGKILL a service and reap it."""
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self, name: str) -> None:
        """Graceful stop (SIGTERM) of a service."""
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        """Stop every service and anvil."""
        for name in list(self.procs):
            self.stop(name)
        self.node.stop()

    # --- matcher queries --------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The matcher's ``status`` op."""
        async with connect(self.url, open_timeout=2) as ws:
            await ws.recv()
            await ws.send(json.dumps({"op": "status", "id": 1}))
            while True:
                f = json.loads(await ws.recv())
                if f.get("type") == "response":
                    assert f["ok"], f
                    return dict(f["result"])

    def wait_settled(self, at_least: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the matcher has heard (through the watcher) that everything it sequenced
        (at least ``at_least`` items) is settled on-chain."""
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = asyncio.run(self.status())
            if st["matched_seq"] >= at_least and st["settled_seq"] == st["matched_seq"]:
                return st
            time.sleep(0.25)
        raise TimeoutError(f"not settled in time: {st}; chain nextSeq {self.ex.client.next_seq()}")

    # --- verification (crossbook.reconcile: the same checks `crossbook reconcile` runs) -------
    def journal_items(self) -> list[tuple[int, Item]]:
        """Every item the matcher sequenced that its retained journal proves (these runs never
        fill a journal segment, so the replay starts from record 1: every item)."""
        return replay_journal(self.journal_dir).items

    def recovered_engine(self) -> Engine:
        """The matcher's state as it would restart (journal + newest snapshot)."""
        return recovered_engine(self.journal_dir)

    def settled_events(self) -> list[ChainBatchSettled]:
        """Every BatchSettled (with its ItemRejected) since deployment."""
        evs = chain_events(self.w3, self.ex.client.contract.address, self.ex.deployment.start_block,
                           self.w3.eth.block_number)
        return [e for e in evs if isinstance(e, ChainBatchSettled)]

    def onchain_items(self, events: Sequence[ChainBatchSettled]) -> dict[int, bytes]:
        """seq -> the item bytes the contract processed, from each settling tx's calldata."""
        out: dict[int, bytes] = {}
        for b in settled_batches(self.w3, self.ex.client.contract.address, events):
            assert b.items is not None, f"batch {b.first_seq}+{b.count}: calldata not decodable"
            for i, data in enumerate(b.items):
                assert b.first_seq + i not in out, f"seq {b.first_seq + i} settled twice"
                out[b.first_seq + i] = data
        return out

    def chain_account(self, owner: str, sub: int) -> SubAccount:
        """The sub-account as the contract's views report it."""
        return self.ex.client.subaccount(owner, sub)


async def wait_status(stack: Stack, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the matcher's ``status`` until ``pred(status)`` (a generous bound: it is only
    reached when something is wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        st = await stack.status()
        if pred(st):
            return st
        assert time.monotonic() < deadline, f"status never matched: {st}"
        await asyncio.sleep(0.2)


def assert_tiles(events: Sequence[ChainBatchSettled], n: int) -> None:
    """BatchSettled ranges tile [1, n] with no gap and no overlap, in order."""
    findings = check_tiling(events, n + 1)
    assert not findings, f"settled ranges do not tile [1, n]: {findings}"


def assert_ledger_matches_chain(stack: Stack, eng: Engine) -> int:
    """For every sub-account the engine knows: confirmed == chain and projected == confirmed;
    and the whole reconciliation (`crossbook reconcile`: items, ranges, busts) finds nothing.
    Returns how many sub-accounts were compared."""
    assert eng.ledger.unsettled_count() == 0
    confirmed = ledger_accounts(eng)
    chain = {a: stack.chain_account(*a) for a in confirmed}
    findings = check_ledger(confirmed, chain)
    assert not findings, findings
    for acct in confirmed:
        assert canon(eng.account(*acct)) == canon(chain[acct]), acct
    report = reconcile_stack(stack.journal_dir, stack.w3, stack.ex.deployment)
    assert report.ok, report.failures
    return len(confirmed)


async def login(stack: Stack, user: Signer, subscribe: Sequence[str] = ()) -> Client:
    """A logged-in websocket client for ``user`` on the stack's matcher (real EIP-712 login
    against the deployment's domain)."""
    c = await Client.open(stack.url)
    ch = c.hello["challenge"]
    exp = int(time.time()) + 240
    sig = user.sign_digest(login_digest(stack.ex.domain, user.address.lower(), user.address.lower(),
                                        bytes.fromhex(ch[2:]), exp))
    r = await c.request("login", owner=user.address.lower(), signer=user.address.lower(), challenge=ch,
                        expiry=exp, signature="0x" + sig.hex())
    assert r["ok"], r
    if subscribe:
        r = await c.request("subscribe", channels=list(subscribe))
        assert r["ok"], r
    return c


def order_msg(o: Order, sig: bytes, tif: str) -> dict[str, Any]:
    """The fields of a ``place`` request."""
    return {"order": {"owner": o.owner.lower(), "subaccount": o.subaccount, "market": o.market,
                      "is_buy": o.is_buy, "reduce_only": o.reduce_only, "price": o.price,
                      "size": o.size, "nonce": o.nonce, "expiry": o.expiry,
                      "max_fee_ppm": o.max_fee_ppm},
            "signature": "0x" + sig.hex(), "tif": tif}
