"""`crossbook up` when its anvil dies with blocks it never saved (kill -9 between state dumps).

anvil saves its chain every 5 s; killed in between, it restarts from the last save, behind
blocks whose events the matcher has already applied (here a deposit). Such a chain cannot carry
on the journal (settlement stalls: the relayer is refused the lost settled items, and events in
re-mined block numbers are skipped), so the supervisor must say so and stop instead of
restarting anvil into it, and a second `up` on the same state must refuse to resume.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from crossbook.chain.clearinghouse import ClearinghouseClient
from crossbook.chain.deploy import Deployment
from crossbook.chain.devkeys import FIRST_USER, dev_key
from crossbook.config import USD
from crossbook.paths import ANVIL_STATE_FILE
from crossbook.supervisor import saved_head
from tests.supervised import Up, alive
from tests.ws.helpers import Client

pytestmark = pytest.mark.timeout(300)

LIGHT = ["--without", "mm1", "--without", "mm2", "--without", "dashboard", "--without", "funding",
         "--without", "keeper", "--without", "feeder"]


def _cursor_block(url: str) -> int:
    async def go() -> int:
        c = await Client.open(url)
        try:
            r = await c.request("status")
            assert r["ok"], r
            return int(r["result"]["chain_cursor"][0])
        finally:
            await c.close()
    return asyncio.run(go())


def _wait_exit(up: Up, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.proc.poll() is not None:
            return up.proc.returncode
        time.sleep(0.2)
    return None


def _kill_anvil_ahead_of_its_save(up: Up, home: Path) -> tuple[int, int]:
    """Deposit right after anvil saved, wait until the matcher applied it, kill -9 anvil before
    the next save. Returns (saved head, matcher cursor block) as left behind."""
    state_file = home / ANVIL_STATE_FILE
    st: dict[str, Any] = up.refresh()
    dep = Deployment.load(home / "deployment.json")
    client = ClearinghouseClient(Web3(Web3.HTTPProvider(str(st["rpc_url"]))), dep)
    payer = client.sender(dev_key(FIRST_USER))
    matcher_url = str(st["services"]["matcher"]["urls"]["ws"])
    for _ in range(5):
        deadline = time.monotonic() + 15
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        mtime = state_file.stat().st_mtime_ns
        while state_file.stat().st_mtime_ns == mtime and time.monotonic() < deadline:
            time.sleep(0.02)  # a save just happened: the next is ~5 s away
        time.sleep(0.3)  # let it finish writing
        client.mint_and_deposit(payer, payer.address, 0, "USDC", 10 * USD)
        block = client.w3.eth.block_number
        while _cursor_block(matcher_url) < block - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        cursor = _cursor_block(matcher_url)
        os.kill(int(up.refresh()["services"]["anvil"]["pid"]), signal.SIGKILL)
        head = saved_head(state_file)
        assert head is not None
        if head < cursor:
            return head, cursor
        # a save slipped in before the kill: this chain is whole again, try once more
        time.sleep(3)
        up.refresh()
    raise AssertionError("could not kill anvil between a deposit and its next save")


def test_anvil_killed_before_saving_stops_the_stack_and_a_resume_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    up = Up(home, LIGHT)
    try:
        up.wait_up()
        pids = [s["pid"] for s in up.refresh()["services"].values() if s["pid"]]
        head, cursor = _kill_anvil_ahead_of_its_save(up, home)
        rc = _wait_exit(up, 60)
        text = up.text()
        assert rc == 1, f"up kept running on a chain behind its journal:\n{text[-3000:]}"
        assert f"ends at block {head}" in text and f"up to block {cursor}" in text, text[-3000:]
        assert "--fresh" in text
        assert "anvil restarted" not in text
        assert not [p for p in pids if alive(int(p))]  # every child stopped
    finally:
        up.kill_if_running()

    again = Up(home, LIGHT)
    try:
        rc = _wait_exit(again, 120)
        text = again.text()
        assert rc == 1, f"a second up resumed on a chain behind its journal:\n{text[-3000:]}"
        assert "cannot resume" in text and f"up to block {cursor}" in text, text[-3000:]
        assert "Crossbook is up" not in text
    finally:
        again.kill_if_running()
