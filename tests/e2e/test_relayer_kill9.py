"""Invariant 3 end to end: kill -9 the relayer at 20 random points while 10,000 fills stream
through the real matcher; afterwards every fill is on-chain exactly once and in order (the
matcher's journal against the settle calldata and the contract's BatchSettled events), and the
matcher's shadow ledger equals the chain for every sub-account."""
from __future__ import annotations

import os
import random
import threading
import time

from eth_utils import keccak

from crossbook.batch_codec import encode_item
from crossbook.chain.anvil import rpc_call
from crossbook.chain.devkeys import OPERATOR, dev_address
from crossbook.protocol_types import FillItem
from tests.e2e.flow import prepare, quote, run_async, take, wait_ready
from tests.e2e.stack import Stack, assert_ledger_matches_chain, assert_tiles

FILLS = 10_000
KILLS = 20
_NEXT_SEQ = "0x" + keccak(text="nextSeq()")[:4].hex()


def chain_next_seq(stack: Stack) -> int:
    """``nextSeq()`` through a bare JSON-RPC call (safe from the killer thread)."""
    out = rpc_call(stack.node.url, "eth_call",
                   [{"to": stack.ex.client.contract.address, "data": _NEXT_SEQ}, "latest"])
    return int(str(out), 16)


def test_relayer_kill9_20_times_during_10k_fills(stack: Stack) -> None:
    rng = random.Random(int(os.environ.get("E2E_SEED", "20261124")))
    t0 = time.monotonic()
    flow = prepare(stack, FILLS)
    second_key = stack.grant_operator(6)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()
    run_async(wait_ready(stack, flow))
    run_async(quote(stack, flow, FILLS))
    t_ready = time.monotonic()

    lives: list[tuple[int, int, float]] = []  # (nextSeq at start, at kill, seconds alive)
    errors: list[BaseException] = []

    def killer() -> None:
        try:
            for _ in range(KILLS):
                before = chain_next_seq(stack)
                # small batches and a short pipeline keep settlement busy for the whole stream
                stack.start_relayer("--max-items", "100", "--in-flight", "2", "--max-age", "0.1")
                log = stack.logs["relayer"]
                deadline = time.monotonic() + 20
                # past start-up (python imports take seconds on a loaded box), so the kill lands
                # while it streams, batches, sends or waits for receipts
                while "resuming at seq" not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.02)
                alive = rng.uniform(0.0, 2.5)
                time.sleep(alive)
                stack.kill9("relayer")
                lives.append((before, chain_next_seq(stack), alive))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            errors.append(exc)

    th = threading.Thread(target=killer)
    th.start()
    run_async(take(stack, flow, duration_s=40.0))
    th.join()
    assert not errors, errors
    t_stream = time.monotonic()

    # the backlog is settled by two relayers at once (one started by mistake, its own key): the
    # contract's nextSeq check lets each batch through once, the loser resyncs
    stack.start_relayer()
    stack.start_relayer(name="relayer-b", key=second_key)
    st = stack.wait_settled(FILLS, timeout=120)
    t_settled = time.monotonic()
    n = st["matched_seq"]
    assert n == FILLS and flow.fills == FILLS
    assert st["lag_items"] == 0 and flow.lag_seen > 0  # lag was measured and exposed
    progressed = sum(1 for a, b, _ in lives if b > a)
    busy = sum(1 for _, b, _ in lives if b <= n)  # killed with fills still unsettled
    assert len(lives) == KILLS and progressed >= KILLS // 4 and busy >= KILLS - 2, lives

    # the chain: BatchSettled ranges tile [1, n]; nothing was rejected
    events = stack.settled_events()
    assert_tiles(events, n)
    assert chain_next_seq(stack) == n + 1
    assert all(not e.rejected for e in events)
    onchain = stack.onchain_items(events)

    senders = {str(stack.w3.eth.get_transaction(e.tx_hash)["from"]) for e in events}  # type: ignore[arg-type]
    assert senders <= {dev_address(OPERATOR), dev_address(6)}, senders
    assert "resuming at seq" in stack.logs["relayer-b"].read_text()  # it did take part
    for name in ("relayer", "relayer-b", "watcher", "matcher"):
        stack.stop(name)
    # snapshots were written in the background while it ran (every 4,000 commands), besides the
    # one at shutdown; older ones were pruned
    snaps = sorted((stack.journal_dir / "snapshots").glob("snapshot-*.bin"))
    assert 2 <= len(snaps) <= 4, snaps
    # the matcher's journal: every sequenced item, on-chain exactly once, in order, same bytes
    journal = stack.journal_items()
    assert [s for s, _ in journal] == list(range(1, n + 1))
    assert all(isinstance(it, FillItem) for _, it in journal)
    assert all(onchain[s] == encode_item(it) for s, it in journal)
    # the shadow ledger (as the matcher restarts) equals the chain, projected == confirmed
    compared = assert_ledger_matches_chain(stack, stack.recovered_engine())
    assert compared == len(flow.makers) + len(flow.takers)
    print(f"\nsetup {t_ready - t0:.1f}s, stream+kills {t_stream - t_ready:.1f}s, "
          f"final settle {t_settled - t_stream:.1f}s, verify {time.monotonic() - t_settled:.1f}s; "
          f"{len(events)} batches from {len(senders)} senders; lives {[(a, b) for a, b, _ in lives]}")
