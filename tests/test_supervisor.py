"""`crossbook up` end to end: the whole stack as supervised processes on a temp state dir.

One stack start (module fixture) serves every check: all services ready, each /metrics answers
with the expected names, a trade through the matcher websocket settles on-chain, a withdrawal
through `crossbook withdraw` settles, a killed child is restarted, SIGINT stops every child (no
orphan pids), and a second `up` on the same state resumes the same deployment and journal.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from web3 import Web3

from crossbook.chain.clearinghouse import ClearinghouseClient
from crossbook.chain.deploy import Deployment
from crossbook.chain.devkeys import FIRST_USER, dev_key
from crossbook.config import PRICE, SIZE
from crossbook.eip712 import Domain, Signer
from crossbook.paths import REPO_ROOT
from crossbook.protocol_types import Order
from matcher.sessions import login_digest
from tests.supervised import Up
from tests.supervised import alive as _alive
from tests.ws.helpers import Client

pytestmark = pytest.mark.timeout(240)

EXPECTED_METRICS = {
    "matcher": ["crossbook_matcher_orders_total", "crossbook_matcher_ack_latency_seconds_bucket",
                "crossbook_matcher_open_orders", "crossbook_matcher_settlement_lag_items",
                "crossbook_matcher_settlement_lag_seconds", "crossbook_matcher_journal_bytes",
                "crossbook_matcher_replay_protection_keys", "crossbook_matcher_fill_log_ok"],
    "relayer": ["crossbook_relayer_batch_gas_bucket", "crossbook_relayer_batches_total",
                "crossbook_relayer_settle_delay_p99_seconds"],
    "watcher": ["crossbook_watcher_events_total", "crossbook_watcher_cursor_block"],
    "keeper": ["crossbook_keeper_scan_seconds_bucket", "crossbook_keeper_accounts",
               "crossbook_keeper_liquidations_won_total", "crossbook_keeper_liquidations_lost_total"],
    "feeder": ["crossbook_feeder_updates_total", "crossbook_feeder_price"],
}
CORE = ("anvil", "matcher", "relayer", "watcher", "keeper", "feeder")


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def _status(url: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        c = await Client.open(url)
        try:
            r = await c.request("status")
            assert r["ok"], r
            return dict(r["result"])
        finally:
            await c.close()
    return asyncio.run(go())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crossbook-home")


@pytest.fixture(scope="module")
def up(home: Path) -> Iterator[Up]:
    u = Up(home)
    try:
        u.wait_up()
        yield u
    finally:
        u.kill_if_running()


def test_every_service_ready(up: Up) -> None:
    st = up.state
    for name in CORE:
        assert name in st["services"], name
        assert st["services"][name]["ready"], name
        assert _alive(st["services"][name]["pid"]), name
    text = up.text()
    for line in ("chain (JSON-RPC)", "matcher (ws)", "metrics:", "Ctrl-C stops everything"):
        assert line in text
    # mm and dashboard run when this CLI has them, and are reported as skipped otherwise
    from crossbook.supervisor import available_commands

    have = available_commands()
    for name, cmd in (("mm1", "mm"), ("mm2", "mm"), ("dashboard", "dashboard")):
        assert (name in st["services"]) == (cmd in have), name


def test_metrics_of_every_service(up: Up) -> None:
    for name, names in EXPECTED_METRICS.items():
        body = _metrics(up.state["services"][name]["urls"]["metrics"])
        assert f'crossbook_ready{{service="{name}"}} 1.0' in body, name
        for metric in names:
            assert metric in body, f"{name}: {metric} missing"


def _sign_order(signer: Signer, domain: Domain, market: int, is_buy: bool, price: int, size: int) -> dict[str, Any]:
    o = Order(owner=signer.address.lower(), subaccount=0, market=market, is_buy=is_buy, reduce_only=False,
              price=price, size=size, nonce=time.time_ns() // 1000, expiry=int(time.time()) + 3600,
              max_fee_ppm=1_000)
    sig = signer.sign_order(domain, o)
    return {"order": {"owner": o.owner, "subaccount": 0, "market": market, "is_buy": is_buy, "reduce_only": False,
                      "price": price, "size": size, "nonce": o.nonce, "expiry": o.expiry, "max_fee_ppm": 1_000},
            "signature": "0x" + sig.hex()}


async def _login(url: str, signer: Signer, domain: Domain) -> Client:
    c = await Client.open(url)
    ch = c.hello["challenge"]
    exp = int(time.time()) + 200
    owner = signer.address.lower()
    sig = signer.sign_digest(login_digest(domain, owner, owner, bytes.fromhex(ch[2:]), exp))
    r = await c.request("login", owner=owner, signer=owner, challenge=ch, expiry=exp, signature="0x" + sig.hex())
    assert r["ok"], r
    return c


def test_trade_settles_on_chain(up: Up) -> None:
    dep = Deployment.load(up.home / "deployment.json")
    client = ClearinghouseClient(Web3(Web3.HTTPProvider(up.state["rpc_url"])), dep)
    url = up.state["services"]["matcher"]["urls"]["ws"]
    maker = Signer(bytes.fromhex(dev_key(FIRST_USER)[2:]))  # demo accounts 0 and 3 (the bots use 1, 2)
    taker = Signer(bytes.fromhex(dev_key(FIRST_USER + 3)[2:]))
    domain = client.domain
    btc = 1  # a market where a 0.01 lot trades at a price far from the bots' quotes
    oracle = client.oracle_price(dep_feed := 1)
    assert dep_feed == 1
    price = (oracle * 102 // 100) // (PRICE // 10) * (PRICE // 10)  # 2% above oracle, on tick
    size = SIZE // 100
    before = client.position(taker.address, 0, btc).size

    async def trade() -> None:
        m = await _login(url, maker, domain)
        t = await _login(url, taker, domain)
        r = await m.request("place", tif="GTC", **_sign_order(maker, domain, btc, False, price, size))
        assert r["ok"], r
        r = await t.request("place", tif="IOC", **_sign_order(taker, domain, btc, True, price, size))
        assert r["ok"], r
        await m.request("cancel_all", sub=0)
        await m.close()
        await t.close()

    asyncio.run(trade())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.position(taker.address, 0, btc).size > before:
            break
        time.sleep(0.25)
    assert client.position(taker.address, 0, btc).size > before, "the fill never settled on-chain"
    body = _metrics(up.state["services"]["matcher"]["urls"]["metrics"])
    assert 'crossbook_matcher_orders_total{op="place",outcome="ok"}' in body
    gauges = {ln.split()[0]: float(ln.split()[1]) for ln in body.splitlines()
              if ln.startswith(("crossbook_matcher_journal_bytes ",
                                "crossbook_matcher_replay_protection_keys ",
                                "crossbook_matcher_fill_log_ok "))}
    # the two orders above are journaled and their nonces remembered (they expire in an hour)
    assert gauges["crossbook_matcher_journal_bytes"] > 0
    assert gauges["crossbook_matcher_replay_protection_keys"] >= 2
    assert gauges["crossbook_matcher_fill_log_ok"] == 1
    assert "crossbook_relayer_batch_gas_count" in _metrics(up.state["services"]["relayer"]["urls"]["metrics"])


def test_withdraw_command_waits_until_settled(up: Up) -> None:
    env = {**os.environ, "CROSSBOOK_HOME": str(up.home)}
    r = subprocess.run([sys.executable, "-m", "crossbook.cli", "withdraw", "12.5", "--key", "dev:3",
                        "--matcher-url", up.state["services"]["matcher"]["urls"]["ws"]],
                       capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "withdrew 12.5 USDC" in r.stdout
    assert "waiting for settlement on-chain" in r.stderr  # progress while it waits


def test_crashed_child_is_restarted(up: Up) -> None:
    old = up.state["services"]["feeder"]["pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        svc = up.refresh()["services"]["feeder"]
        if svc["pid"] and svc["pid"] != old and svc["restarts"] >= 1:
            return
        time.sleep(0.25)
    raise AssertionError("feeder was not restarted:\n" + up.text()[-2000:])


def test_sigint_stops_everything_and_restart_resumes(up: Up, home: Path) -> None:
    st = up.refresh()
    status_before = _status(st["services"]["matcher"]["urls"]["ws"])
    pids = {n: s["pid"] for n, s in st["services"].items() if s["pid"]}
    assert up.stop() == 0
    alive = [n for n, pid in pids.items() if _alive(pid)]
    assert not alive, f"orphans after SIGINT: {alive}"
    assert not (home / "stack.json").exists()
    text = up.text()
    # ordered: matcher after the services that talk to it, anvil last (it saves the chain)
    assert text.index("stopping watcher, relayer") < text.index("stopping matcher") < text.index("stopping anvil")
    assert "did not stop" not in text  # every service stopped on its signal: none was killed
    state = home / "anvil-state.json"
    assert state.exists()

    # the README's "after a stop, crossbook reconcile": anvil is stopped too, so reconcile checks
    # the journal against the saved chain on a private anvil, and leaves the state file as it was
    saved = state.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSBOOK_")}
    r = subprocess.run([sys.executable, "-m", "crossbook.cli", "reconcile"], capture_output=True, text=True,
                       env={**env, "CROSSBOOK_HOME": str(home)}, cwd=REPO_ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is down: checking against the state" in r.stderr
    assert r.stdout.rstrip().endswith("\nCONSISTENT")
    settled = re.search(r"(\d+) settled in", r.stdout)
    assert settled and int(settled.group(1)) >= 2  # the trade's fill and the withdrawal above
    assert state.read_bytes() == saved

    again = Up(home)
    try:
        st2 = again.wait_up()
        assert "reusing deployment" in again.text()
        assert st2["clearinghouse"] == st["clearinghouse"]
        after = _status(st2["services"]["matcher"]["urls"]["ws"])
        # the journal replayed: nothing the matcher accepted before the restart is lost
        assert after["cmd_seq"] >= status_before["cmd_seq"]
        assert after["settled_seq"] >= status_before["settled_seq"] >= 1
    finally:
        assert again.stop() == 0
