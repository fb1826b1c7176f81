"""The relayer against a real anvil and the real contracts: exactly once, in order."""
from __future__ import annotations

import asyncio
import time

import pytest
from web3 import AsyncWeb3

from crossbook.chain.anvil import rpc_call
from crossbook.chain.devkeys import dev_key
from crossbook.chain.local_exchange import LocalExchange
from crossbook.protocol_types import NONCE_SPENT, RejectReason
from settlement.batcher import BatchLimits
from settlement.relayer import Relayer, RelayerConfig, RelayerError
from settlement.source import InMemorySource
from tests.settlement.conftest import OPERATOR_KEY, SECOND_OPERATOR_KEY, USERS, assert_exactly_once, make_fills

CFG = RelayerConfig(limits=BatchLimits(max_items=4, max_age_s=0.02), max_in_flight=3, poll_interval_s=0.01)


async def test_settles_a_stream_exactly_once_in_order(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    fills = make_fills(ex, 22)
    src = InMemorySource(first_seq=first)
    relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG)
    task = asyncio.create_task(relayer.run())
    for f in fills:  # items keep arriving while batches are in flight
        src.append(f)
        await asyncio.sleep(0.002)
    src.close()
    await asyncio.wait_for(task, 60)
    evs = assert_exactly_once(ex, first, len(fills))
    assert all(e.rejected == [] for e in evs)
    assert [(e.first_seq, e.count) for e in relayer.settled] == [(e.first_seq, e.count) for e in evs]
    assert sum(abs(ex.client.position(u.address, 0, 0).size) for u in USERS) > 0
    assert sum(ex.client.position(u.address, 0, 0).size for u in USERS) == 0
    lag = relayer.lag.snapshot(now=0.0)
    assert lag.items == 0 and lag.samples == len(fills)


async def test_restart_mid_stream_is_harmless(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    fills = make_fills(ex, 120)  # 30 batches: far more than two kills can let through, even under load
    src = InMemorySource(fills, first_seq=first)
    src.close()
    for stop_after in (2, 3):  # kill twice while transactions are in flight
        r = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG)
        task = asyncio.create_task(r.run())
        while len(r.settled) < stop_after:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ex.client.next_seq() < first + len(fills)
    final = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG)
    await asyncio.wait_for(final.run(), 60)
    assert_exactly_once(ex, first, len(fills))
    # every fill applied once: each order was filled exactly to its size, which spends its nonce
    for f in fills:
        assert ex.client.filled_amount(f.taker.owner, f.taker.nonce) == NONCE_SPENT


async def test_a_finished_stream_resubmitted_is_a_noop(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    src = InMemorySource(make_fills(ex, 5), first_seq=first)
    src.close()
    await Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG).run()
    again = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG)
    await again.run()
    assert list(again.settled) == []
    assert_exactly_once(ex, first, 5)


async def test_two_relayers_started_at_once_never_double_settle(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    src = InMemorySource(make_fills(ex, 40), first_seq=first)
    src.close()
    a = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG)
    b = Relayer(aw3, ex.client.contract.address, SECOND_OPERATOR_KEY, src, CFG)
    await asyncio.wait_for(asyncio.gather(a.run(), b.run()), 90)
    evs = assert_exactly_once(ex, first, 40)
    assert len(a.settled) + len(b.settled) == len(evs)
    assert a.settled and b.settled or any(r.name == "BatchOutOfOrder" for r in [*a.reverts, *b.reverts])


async def test_a_rejected_item_is_reported(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    fills = make_fills(ex, 6, expired={3})
    src = InMemorySource(fills, first_seq=first)
    src.close()
    seen: list[tuple[int, int]] = []
    r = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, CFG,
                on_settled=lambda ev: seen.extend(ev.rejected))
    await r.run()
    assert seen == [(first + 3, RejectReason.EXPIRED)]
    evs = assert_exactly_once(ex, first, 6)
    assert [rj for e in evs for rj in e.rejected] == [(first + 3, RejectReason.EXPIRED)]


async def test_a_persistent_revert_stops_with_a_clear_error(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    src = InMemorySource(make_fills(ex, 8), first_seq=first)
    src.close()
    cfg = RelayerConfig(limits=BatchLimits(max_items=8, max_age_s=0.01), max_failures=3, poll_interval_s=0.01)
    r = Relayer(aw3, ex.client.contract.address, dev_key(7), src, cfg)  # not an operator
    with pytest.raises(RelayerError, match="AccessControlUnauthorizedAccount") as err:
        await asyncio.wait_for(r.run(), 30)
    assert r.failures == 3 and err.value.revert is not None
    assert r.batcher.item_cap == 2  # it split 8 -> 4 -> 2 before giving up
    assert ex.client.next_seq() == first


async def _pool_tips(aw3: AsyncWeb3) -> list[int]:
    """The priority fees of the node's pending transactions (anvil's ``txpool_content``)."""
    pool = await aw3.provider.make_request("txpool_content", [])  # type: ignore[arg-type]
    return [int(tx["maxPriorityFeePerGas"], 16) for txs in pool["result"]["pending"].values()
            for tx in txs.values()]


async def test_a_stuck_transaction_is_replaced_with_higher_fees(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    first = ex.client.next_seq()
    src = InMemorySource(make_fills(ex, 3), first_seq=first)
    src.close()
    cfg = RelayerConfig(limits=BatchLimits(max_items=3, max_age_s=0.01), stuck_after_s=0.3, poll_interval_s=0.01)
    r = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
    await aw3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        task = asyncio.create_task(r.run())
        # the tx sits in the mempool until the relayer's replacement with a higher tip is there
        # (polled rather than slept for: a loaded machine may take longer than stuck_after_s)
        deadline = time.monotonic() + 30
        while max(await _pool_tips(aw3), default=0) <= cfg.priority_fee_wei:
            assert time.monotonic() < deadline, "no fee-bumped replacement reached the mempool"
            assert not task.done()
            await asyncio.sleep(0.05)
        assert not task.done()
        await aw3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        await asyncio.wait_for(task, 20)
    finally:
        await aw3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    assert_exactly_once(ex, first, 3)
    assert len(r.settled) == 1
    tx = await aw3.eth.get_transaction(r.settled[0].tx_hash)  # type: ignore[arg-type]
    assert tx["maxPriorityFeePerGas"] > cfg.priority_fee_wei  # the replacement, not the original, was mined


async def test_gas_limits_follow_simulation_and_full_blocks_hold_batches(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """Each settle tx's gas limit comes from simulating it (behind the batches still in flight),
    not from the batcher's worst-case bound; when the node's next block cannot hold another
    batch, the relayer waits for a block instead of sending with the bound."""
    url = ex.node.url
    block_gas = 1_200_000  # a small block: three 3-fill batches fill it
    first = ex.client.next_seq()
    fills = make_fills(ex, 36)
    src = InMemorySource(fills, first_seq=first)
    src.close()
    cfg = RelayerConfig(limits=BatchLimits(max_items=3, max_age_s=0.01, max_gas=block_gas - 100_000),
                        max_in_flight=8, poll_interval_s=0.01)
    relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
    rpc_call(url, "evm_setBlockGasLimit", [hex(block_gas)])
    rpc_call(url, "evm_setIntervalMining", [1])
    try:
        await asyncio.wait_for(relayer.run(), 120)
    finally:
        rpc_call(url, "evm_setIntervalMining", [0])
        rpc_call(url, "evm_setAutomine", [True])
        rpc_call(url, "evm_setBlockGasLimit", [hex(30_000_000)])
    assert_exactly_once(ex, first, len(fills))
    blocks: dict[int, int] = {}
    for ev in relayer.settled:
        tx = await aw3.eth.get_transaction(ev.tx_hash)  # type: ignore[arg-type]
        receipt = await aw3.eth.get_transaction_receipt(ev.tx_hash)  # type: ignore[arg-type]
        used, limit = int(receipt["gasUsed"]), int(tx["gas"])
        assert used <= limit <= used * cfg.gas_margin * 1.1 + 50_000  # simulated, not the bound
        assert limit < relayer.batcher.limits.base_gas + 3 * relayer.batcher.limits.gas_of(fills[0])
        blocks[int(receipt["blockNumber"])] = blocks.get(int(receipt["blockNumber"]), 0) + 1
    assert max(blocks.values()) >= 2  # pipelined: several batches share a block
    assert len(blocks) >= 3  # and the full blocks made later batches wait for the next ones


async def test_a_batch_out_of_gas_raises_the_margin_and_settles(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """A gas limit below what the batch needs: the receipt is diagnosed as out of gas, the margin
    goes up, and the resent batch settles exactly once."""
    first = ex.client.next_seq()
    fills = make_fills(ex, 8)
    src = InMemorySource(fills, first_seq=first)
    src.close()
    cfg = RelayerConfig(limits=BatchLimits(max_items=8, max_age_s=0.01), max_in_flight=1, poll_interval_s=0.01,
                        gas_margin=0.6, refund_margin=0.6, max_gas_margin=1.3, max_failures=6)
    relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
    await asyncio.wait_for(relayer.run(), 60)
    assert_exactly_once(ex, first, len(fills))
    assert any(r.name == "OutOfGas" for r in relayer.reverts)
    assert 0.6 < relayer.gas_margin <= 1.3


async def test_a_tight_limit_that_fails_its_check_goes_out_with_the_refund_margin(
        ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """The tight limit is executed once before sending; one that would run out of gas (here a
    margin below 1, as a batch whose refunds exceed the margin would) is replaced by the refund
    margin, so no transaction burns a block's space out of gas."""
    first = ex.client.next_seq()
    fills = make_fills(ex, 8)
    src = InMemorySource(fills, first_seq=first)
    src.close()
    cfg = RelayerConfig(limits=BatchLimits(max_items=4, max_age_s=0.01), max_in_flight=1, poll_interval_s=0.01,
                        gas_margin=0.5, refund_margin=1.3)
    relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
    await asyncio.wait_for(relayer.run(), 60)
    assert_exactly_once(ex, first, len(fills))
    assert list(relayer.reverts) == []
    for ev in relayer.settled:
        tx = await aw3.eth.get_transaction(ev.tx_hash)  # type: ignore[arg-type]
        receipt = await aw3.eth.get_transaction_receipt(ev.tx_hash)  # type: ignore[arg-type]
        assert int(tx["gas"]) >= int(receipt["gasUsed"]) * 125 // 100


async def test_batches_grow_to_the_measured_gas_and_one_too_big_for_a_block_is_split(
        ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """Simulations calibrate the batcher's worst-case bound, so batches grow towards max_gas of
    real gas; a calibration that is off (headroom below 1 here) makes a batch no block can hold,
    and the relayer settles it in halves instead of sending it."""
    url = ex.node.url
    block_gas = 1_000_000
    first = ex.client.next_seq()
    fills = make_fills(ex, 48)

    async def run(headroom: float) -> Relayer:
        src = InMemorySource(fills, first_seq=ex.client.next_seq())
        src.close()
        cfg = RelayerConfig(limits=BatchLimits(max_items=100, max_age_s=0.01, max_gas=450_000),
                            max_in_flight=4, poll_interval_s=0.01, calibration_headroom=headroom)
        relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
        await asyncio.wait_for(relayer.run(), 120)
        return relayer

    rpc_call(url, "evm_setBlockGasLimit", [hex(block_gas)])
    rpc_call(url, "evm_setIntervalMining", [1])
    try:
        calibrated = await run(1.0)
        counts = [ev.count for ev in calibrated.settled]
        assert_exactly_once(ex, first, len(fills))
        assert calibrated.batcher.gas_scale_ppm < 1_000_000
        assert max(counts[1:]) > counts[0]  # the first batch was cut by the worst-case bound
        assert calibrated.splits == 0
        for ev in calibrated.settled:
            tx = await aw3.eth.get_transaction(ev.tx_hash)  # type: ignore[arg-type]
            assert int(tx["gas"]) <= block_gas
        second = ex.client.next_seq()
        fills = make_fills(ex, 48)
        off = await run(0.25)  # believes batches cost a quarter of what they do
        assert_exactly_once(ex, second, len(fills))
        assert off.splits >= 1 and list(off.reverts) == []
    finally:
        rpc_call(url, "evm_setIntervalMining", [0])
        rpc_call(url, "evm_setAutomine", [True])
        rpc_call(url, "evm_setBlockGasLimit", [hex(30_000_000)])


async def test_no_transaction_exceeds_the_per_transaction_gas_cap(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """A chain may cap a transaction's gas below its block's (EIP-7825: 2^24 since Osaka) and
    refuse anything above. A batch whose limit would pass the cap is split, never sent; every
    item still settles exactly once."""
    first = ex.client.next_seq()
    fills = make_fills(ex, 24)
    src = InMemorySource(fills, first_seq=first)
    src.close()
    cap = 700_000  # a few fills' worth; the block (30M) would take all 24 in one batch
    cfg = RelayerConfig(limits=BatchLimits(max_items=24, max_age_s=0.01, max_gas=5_000_000),
                        max_in_flight=2, poll_interval_s=0.01, tx_gas_cap=cap)
    relayer = Relayer(aw3, ex.client.contract.address, OPERATOR_KEY, src, cfg)
    await asyncio.wait_for(relayer.run(), 120)
    assert_exactly_once(ex, first, len(fills))
    assert relayer.splits >= 1 and list(relayer.reverts) == []
    assert len(relayer.settled) >= 2  # 24 fills need ~880k: halves fit
    for ev in relayer.settled:
        tx = await aw3.eth.get_transaction(ev.tx_hash)  # type: ignore[arg-type]
        assert int(tx["gas"]) <= cap
