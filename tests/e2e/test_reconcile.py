"""`crossbook reconcile` against a real stack: consistent after trading (exit 0, the counts), and
inconsistent (exit 1, ``settled_not_journaled``) against a journal copy that lost its last
records while the chain kept the items they sequenced."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crossbook.chain.local_exchange import user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.paths import REPO_ROOT
from crossbook.reconcile import REPLAY_CONFIG, SETTLED_NOT_JOURNALED
from matcher.engine import Engine
from matcher.journal import iter_records
from tests.e2e.flow import run_async
from tests.e2e.stack import Stack, login, order_msg

ETH = 0
FILLS = 6


def reconcile(stack: Stack, journal_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``crossbook reconcile`` as an operator runs it (a separate process, real anvil)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSBOOK_")}
    return subprocess.run(
        [sys.executable, "-m", "crossbook.cli", "reconcile", "--journal-dir", str(journal_dir),
         "--deployment", str(stack.dep_path), "--rpc-url", stack.node.url, *flags],
        cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=120)


def trade(stack: Stack) -> None:
    """FILLS fills between a resting maker and a taker's IOC orders, settled and confirmed."""
    taker, maker = user_signer(311), user_signer(312)
    stack.ex.fund_many([taker.address, maker.address], "USDC", 1_000_000 * USD)

    async def scenario() -> None:
        deadline = time.monotonic() + 30
        while (await stack.status())["cmd_seq"] < 3:  # two deposits + oracle prices
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        tc, mc = await login(stack, taker), await login(stack, maker)
        exp = int(time.time()) + 3600
        o, sig = stack.ex.order(maker, ETH, False, 3_000 * PRICE, FILLS * SIZE, expiry=exp)
        assert (await mc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        for _ in range(FILLS):
            o, sig = stack.ex.order(taker, ETH, True, 3_000 * PRICE, SIZE, expiry=exp)
            assert (await tc.request("place", **order_msg(o, sig, "IOC")))["ok"]
        for c in (tc, mc):
            await c.close()

    run_async(scenario())


def drop_last_item(journal_dir: Path) -> int:
    """Truncate the (copied) journal before the record that sequenced its last item, and drop
    the snapshots that cover it; returns the number of items left."""
    path = journal_dir / "journal.bin"
    data = path.read_bytes()
    eng = Engine(REPLAY_CONFIG)
    eng.replaying = True
    start, cut, left = 0, 0, 0
    for rec, end in iter_records(data):
        before = eng.ledger.next_seq
        eng.apply(rec.cmd)
        if eng.ledger.next_seq != before:
            cut, left = start, before - 1
        start = end
    assert cut > 0
    with open(path, "r+b") as f:
        f.truncate(cut)
    shutil.rmtree(journal_dir / "snapshots", ignore_errors=True)
    return left


def test_reconcile_a_real_stack_then_a_journal_that_lost_items(stack: Stack, tmp_path: Path) -> None:
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()
    stack.start_relayer()
    trade(stack)
    st = stack.wait_settled(FILLS, timeout=60)
    assert st["matched_seq"] == FILLS
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)

    # consistent: every fill checked byte for byte, both sub-accounts equal the chain's
    got = reconcile(stack, stack.journal_dir, "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    rep: dict[str, Any] = json.loads(got.stdout)
    assert rep["ok"] is True and rep["findings"] == []
    assert (rep["settled"], rep["checked"], rep["pending"], rep["not_in_journal"]) == (FILLS, FILLS, 0, 0)
    assert rep["chain_next_seq"] == rep["journal_next_seq"] == FILLS + 1
    assert rep["accounts_compared"] == 2 and rep["rejected"] == []
    assert rep["matcher_cursor"][0] <= rep["chain_block"]
    human = reconcile(stack, stack.journal_dir)
    assert human.returncode == 0 and human.stdout.rstrip().endswith("CONSISTENT"), human.stdout
    print("\n" + human.stdout)
    # read-only: the journal directory is untouched
    assert not any(p.suffix == ".tmp" for p in stack.journal_dir.rglob("*"))

    # the chain holds items a (damaged) journal copy lacks
    copy = tmp_path / "journal-copy"
    shutil.copytree(stack.journal_dir, copy)
    left = drop_last_item(copy)
    assert left < FILLS
    bad = reconcile(stack, copy, "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    rep = json.loads(bad.stdout)
    assert rep["ok"] is False and rep["checked"] == left
    failures = [f for f in rep["findings"] if f["severity"] == "failure"]
    assert {f["kind"] for f in failures} == {SETTLED_NOT_JOURNALED}
    assert [f["seq"] for f in failures] == list(range(left + 1, FILLS + 1))
    human = reconcile(stack, copy)
    assert human.returncode == 1 and human.stdout.rstrip().endswith("INCONSISTENT"), human.stdout
    assert f"FAILURE settled_not_journaled: seq {FILLS} was settled" in human.stdout
    print(human.stdout)

    # usage errors: exit 2 with a message
    missing = reconcile(stack, tmp_path / "nowhere")
    assert missing.returncode == 2 and "no journal directory" in missing.stderr
