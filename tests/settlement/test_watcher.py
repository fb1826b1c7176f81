"""The chain watcher against a real anvil: every event kind, restart from its state file, reorgs."""
from __future__ import annotations

from pathlib import Path

from web3 import AsyncWeb3

from crossbook.chain.local_exchange import LocalExchange, user_key
from crossbook.config import USD
from crossbook.protocol_types import ForcedItem, FundingItem, RejectReason
from settlement.events import (
    ChainAgentSet,
    ChainBatchSettled,
    ChainDeposit,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    ChainFundingUpdated,
    ChainReorg,
    ChainWithdrawn,
    WatcherOutput,
)
from settlement.watcher import ChainWatcher, WatcherState
from tests.settlement.conftest import USERS, make_fills


def _watcher(ex: LocalExchange, aw3: AsyncWeb3, state: Path, confirmations: int = 0) -> ChainWatcher:
    return ChainWatcher(aw3, ex.client.contract.address, state, start_block=ex.w3.eth.block_number + 1,
                        confirmations=confirmations)


async def _drain(w: ChainWatcher) -> list[WatcherOutput]:
    out: list[WatcherOutput] = []
    while True:
        got = await w.poll_and_commit()
        if not got and w.last_block >= await w.w3.eth.block_number - w.confirmations:
            return out
        out.extend(got)


async def test_decodes_every_event_kind(ex: LocalExchange, aw3: AsyncWeb3, tmp_path: Path) -> None:
    w = _watcher(ex, aw3, tmp_path / "w.json")
    alice, bob = USERS[0], USERS[1]
    ex.fund(alice.address, 3, "USDC", 500 * USD)
    ex.give_eth(alice.address)
    alice_tx = ex.client.sender(user_key(1))
    alice_tx.transact(ex.client.contract.functions.setAgent(bob.address, True))
    first = ex.client.next_seq()
    ex.settle(make_fills(ex, 2, expired={1}))
    ex.settle([ex.withdrawal(alice, 0, 100 * USD), FundingItem(0, 10)])
    alice_tx.transact(ex.client.contract.functions.requestForcedWithdrawal(0, 0, 5 * USD))
    ex.settle([ForcedItem(1)])

    evs = await _drain(w)
    kinds = [type(e).__name__ for e in evs]
    assert kinds == ["ChainDeposit", "ChainAgentSet", "ChainBatchSettled", "ChainWithdrawn", "ChainFundingUpdated",
                     "ChainBatchSettled", "ChainForcedWithdrawalRequested", "ChainWithdrawn",
                     "ChainForcedWithdrawalExecuted", "ChainBatchSettled"]
    dep, agent, b1, wd, fund, b2, req, fwd, fex, b3 = evs
    assert isinstance(dep, ChainDeposit) and (dep.owner, dep.subaccount, dep.asset, dep.amount) == (
        alice.address, 3, 0, 500 * USD)
    assert isinstance(agent, ChainAgentSet) and (agent.owner, agent.agent, agent.approved) == (
        alice.address, bob.address, True)
    assert isinstance(b1, ChainBatchSettled) and (b1.first_seq, b1.count) == (first, 2)
    assert b1.rejected == [(first + 1, RejectReason.EXPIRED)]
    assert isinstance(wd, ChainWithdrawn) and (wd.owner, wd.amount, wd.seq) == (alice.address, 100 * USD, first + 2)
    assert isinstance(fund, ChainFundingUpdated) and (fund.market, fund.rate_ppm) == (0, 10)
    assert fund.cumulative_index != 0
    assert isinstance(b2, ChainBatchSettled) and (b2.first_seq, b2.count, b2.rejected) == (first + 2, 2, [])
    assert isinstance(req, ChainForcedWithdrawalRequested) and (req.request_id, req.owner, req.amount) == (
        1, alice.address, 5 * USD)
    assert req.executable_at > 0
    assert isinstance(fwd, ChainWithdrawn) and fwd.seq == first + 4
    assert isinstance(fex, ChainForcedWithdrawalExecuted) and fex.request_id == 1
    assert isinstance(b3, ChainBatchSettled) and b3.first_seq == first + 4
    assert all(e.block_hash.startswith("0x") and len(e.tx_hash) == 66 for e in evs)  # type: ignore[union-attr]


async def test_resumes_from_its_state_file_after_a_restart(ex: LocalExchange, aw3: AsyncWeb3, tmp_path: Path) -> None:
    state = tmp_path / "watcher.json"
    start = ex.w3.eth.block_number + 1
    w1 = ChainWatcher(aw3, ex.client.contract.address, state, start_block=start)
    ex.fund(USERS[0].address, 0, "USDC", 1 * USD)
    assert [type(e) for e in await _drain(w1)] == [ChainDeposit]
    saved = WatcherState.load(state)
    assert saved is not None and saved.block_number == w1.last_block
    ex.fund(USERS[1].address, 0, "USDC", 2 * USD)
    w2 = ChainWatcher(aw3, ex.client.contract.address, state, start_block=start)  # a new process
    evs = await _drain(w2)
    assert [(type(e), e.amount) for e in evs] == [(ChainDeposit, 2 * USD)]  # type: ignore[union-attr]
    assert not (tmp_path / "watcher.json.tmp").exists()


async def test_waits_for_confirmations(ex: LocalExchange, aw3: AsyncWeb3, tmp_path: Path) -> None:
    w = _watcher(ex, aw3, tmp_path / "w.json", confirmations=3)
    ex.fund(USERS[0].address, 0, "USDC", 1 * USD)  # three blocks: mint, approve, deposit
    assert await w.poll_and_commit() == []
    for _ in range(3):
        ex.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert [type(e) for e in await w.poll_and_commit()] == [ChainDeposit]


async def test_a_reorg_rewinds_and_re_emits(ex: LocalExchange, aw3: AsyncWeb3, tmp_path: Path) -> None:
    w = _watcher(ex, aw3, tmp_path / "w.json")
    ex.fund(USERS[0].address, 0, "USDC", 1 * USD)
    fork_point = ex.w3.eth.block_number
    assert len(await _drain(w)) == 1
    snap = ex.snapshot()
    ex.fund(USERS[1].address, 0, "USDC", 2 * USD)  # will be dropped by the reorg
    old = await _drain(w)
    assert [(type(e), e.amount) for e in old] == [(ChainDeposit, 2 * USD)]  # type: ignore[union-attr]
    ex.revert(snap)  # the chain forgets those blocks...
    ex.fund(USERS[2].address, 0, "USDC", 3 * USD)  # ...and grows a different branch
    ex.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    new = await _drain(w)
    assert isinstance(new[0], ChainReorg) and new[0].common_block == fork_point
    assert [(type(e), e.amount) for e in new[1:]] == [(ChainDeposit, 3 * USD)]  # type: ignore[union-attr]
    assert all(e.block_number > fork_point for e in new[1:])  # type: ignore[union-attr]


async def test_a_reorg_via_anvil_reorg(ex: LocalExchange, aw3: AsyncWeb3, tmp_path: Path) -> None:
    w = _watcher(ex, aw3, tmp_path / "w.json")
    ex.fund(USERS[0].address, 0, "USDC", 1 * USD)
    evs = await _drain(w)
    assert len(evs) == 1
    tip = ex.w3.eth.block_number
    ex.w3.provider.make_request("anvil_reorg", [2, []])  # type: ignore[arg-type]  # re-mine the last 2 blocks
    new = await _drain(w)
    assert isinstance(new[0], ChainReorg) and new[0].common_block == tip - 2
    # whatever the new branch holds from the fork on is re-read; the deposit's block was replaced
    assert all(not isinstance(e, ChainReorg) and e.block_number > tip - 2 for e in new[1:])
