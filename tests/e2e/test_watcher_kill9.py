"""Reconciliation end to end: kill -9 the watcher at random points while fills stream and
settle and new deposits land on-chain (deposits are not idempotent: a duplicate would show as
extra quote), with a second watcher running concurrently for part of the time. The engine's chain
cursor turns the watchers' at-least-once delivery into exactly-once, so afterwards the matcher's
confirmed ledger equals the chain for every sub-account."""
from __future__ import annotations

import os
import random
import threading
import time

from crossbook.config import USD
from tests.e2e.flow import prepare, quote, run_async, take, wait_ready
from tests.e2e.stack import Stack, assert_ledger_matches_chain, assert_tiles

FILLS = 10_000
KILLS = 20


def test_watcher_kill9_keeps_the_shadow_ledger_equal_to_the_chain(stack: Stack) -> None:
    rng = random.Random(int(os.environ.get("E2E_SEED", "20261124")) + 1)
    flow = prepare(stack, FILLS)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_relayer()
    stack.start_watcher()
    run_async(wait_ready(stack, flow))
    run_async(quote(stack, flow, FILLS))
    stack.start_watcher("watcher-b")  # a second watcher "started by mistake"

    errors: list[BaseException] = []
    cursors: list[list[int]] = []
    deposits = 0

    def killer() -> None:
        try:
            for i in range(KILLS):
                log = stack.logs["watcher"]
                deadline = time.monotonic() + 20
                while "watcher resuming" not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 2.0))
                stack.kill9("watcher")
                cursors.append(run_async(stack.status())["chain_cursor"])
                if i == KILLS // 2:
                    stack.kill9("watcher-b")
                stack.start_watcher()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            errors.append(exc)

    def depositor() -> None:
        nonlocal deposits
        try:
            owners = [u.address for u in flow.takers[:4]]
            for r in range(6):
                stack.ex.fund_many(owners, "USDC", (r + 1) * 7 * USD, subaccount=r % 2)
                deposits += len(owners)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=killer), threading.Thread(target=depositor)]
    for th in threads:
        th.start()
    run_async(take(stack, flow, duration_s=40.0))
    for th in threads:
        th.join()
    assert not errors, errors
    assert deposits == 24 and len(cursors) == KILLS

    st = stack.wait_settled(FILLS, timeout=90)
    n = st["matched_seq"]
    assert n == FILLS
    # the last chain event the engine applied is the newest the contract emitted (confirmed)
    assert_tiles(stack.settled_events(), n)
    for name in ("relayer", "watcher", "watcher-b", "matcher"):
        stack.stop(name)
    eng = stack.recovered_engine()
    compared = assert_ledger_matches_chain(stack, eng)
    assert compared == len(flow.makers) + len(flow.takers) + 4  # + the takers' sub-account 1
    print(f"\ncursor at each kill: {cursors}")
