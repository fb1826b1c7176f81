"""The relayer: settles the matcher's sequenced stream on-chain exactly once and in order.

It keeps no state of its own (invariant 7): on start, and whenever the chain disagrees with it,
it reads ``nextSeq()`` from the contract and restarts the source from there. The contract
accepts only ``firstSeq == nextSeq`` (invariant 3), so a resubmitted or concurrent batch
reverts with ``BatchOutOfOrder`` and changes nothing; that revert is the normal signal that
someone else (a previous incarnation, a second relayer) settled first.

Up to ``max_in_flight`` settle transactions are pipelined with consecutive nonces (with
second-long blocks this is what keeps throughput up). A transaction not mined after
``stuck_after_s`` is re-signed with the same nonce and bumped fees. Any other revert is decoded,
logged, and retried with the batch split in half; after ``max_failures`` consecutive failures
the relayer stops with :class:`RelayerError` instead of retrying forever.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound

from crossbook.chain.deploy import error_decoder
from crossbook.chain.errors import ContractRevert, ErrorDecoder
from crossbook.protocol_types import Item
from settlement.batcher import Batch, Batcher, BatchLimits
from settlement.events import ChainBatchSettled
from settlement.lag import LagTracker
from settlement.source import ItemSource
from settlement.watcher import EventDecoder

log = logging.getLogger(__name__)

_SETTLE = keccak(text="settle(bytes)")[:4]
_NEXT_SEQ = keccak(text="nextSeq()")[:4]


class RelayerError(Exception):
    """The relayer gave up: a batch kept failing for a reason other than ordering."""

    def __init__(self, msg: str, revert: ContractRevert | None = None) -> None:
        super().__init__(msg)
        self.revert = revert


@dataclass
class RelayerConfig:
    """Tuning knobs; the defaults suit a local anvil and an L2 alike."""

    limits: BatchLimits = field(default_factory=BatchLimits)
    max_in_flight: int = 8
    poll_interval_s: float = 0.05
    # No transaction's gas limit exceeds this, nor the block's: EIP-7825 (Osaka) makes nodes
    # refuse a transaction above 2^24 gas, so a batch that would need more is split instead.
    tx_gas_cap: int = 2**24
    stuck_after_s: float = 15.0
    fee_bump: float = 1.25  # nodes require >= 10% for a same-nonce replacement
    priority_fee_wei: int = 1_000_000_000
    # Gas limit = a simulation's gasUsed (one execution, net of storage refunds) times
    # gas_margin, checked by executing the batch once more at that limit: the limit must cover
    # the gross, and this contract's refunds are ~2-3% of it on a realistic flow. Only a batch
    # whose refunds are larger (many positions closed at once) fails the check and goes out with
    # refund_margin (refunds are at most 1/5 of the gross, EIP-3529: 1.25 covers any batch).
    # A limit is block space reserved: the tighter it is, the more batches share a block. A
    # batch that still runs out of gas raises both margins by 0.1, up to max_gas_margin.
    gas_margin: float = 1.05
    refund_margin: float = 1.3
    max_gas_margin: float = 1.5
    # the batcher's gas model is a worst-case bound; simulations measure the real ratio, and
    # batches are sized by the highest ratio of the last `calibration_window` ones times this
    calibration_headroom: float = 1.0
    calibration_window: int = 8
    max_failures: int = 6
    queue_items: int = 5_000
    # settled batches and decoded reverts kept for inspection: a relayer runs for months, so
    # only the most recent are kept (metrics and logs carry the totals)
    history: int = 4_096


class _Held:
    """Marker: the batch waits for the transactions ahead of it."""


_HOLD = _Held()


@dataclass
class _Tx:
    batch: Batch
    nonce: int
    gas: int
    max_fee: int
    tip: int
    data: bytes
    hashes: list[bytes]
    sent_at: float


def settle_calldata(batch: bytes) -> bytes:
    """ABI-encoded ``settle(bytes)`` call."""
    return _SETTLE + abi_encode(["bytes"], [batch])


class Relayer:
    """Settles ``source`` on the clearinghouse at ``contract`` with the operator key ``key``."""

    def __init__(self, w3: AsyncWeb3, contract: str, key: str | bytes, source: ItemSource,
                 config: RelayerConfig | None = None,
                 on_settled: Callable[[ChainBatchSettled], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 errors: ErrorDecoder | None = None) -> None:
        self.w3 = w3
        self.contract = to_checksum_address(contract)
        self.account: LocalAccount = Account.from_key(key)
        self.source = source
        self.cfg = config or RelayerConfig()
        self.on_settled = on_settled
        self.clock = clock
        self.errors = errors or error_decoder()
        self.events = EventDecoder(address=self.contract)
        self.batcher = Batcher(1, self.cfg.limits)
        self.lag = LagTracker()
        # the latest batches this relayer's txs settled, and the latest decoded reverts
        self.settled: deque[ChainBatchSettled] = deque(maxlen=self.cfg.history)
        self.reverts: deque[ContractRevert] = deque(maxlen=self.cfg.history)
        self.failures = 0
        self.splits = 0  # batches that could not fit a block and were settled in halves
        self.gas_margin = self.cfg.gas_margin
        self.refund_margin = self.cfg.refund_margin
        self._ratios: deque[tuple[int, int]] = deque(maxlen=max(1, self.cfg.calibration_window))
        self._nonce = 0
        self._chain_id = 0
        self._stop = asyncio.Event()

    # --- chain reads ------------------------------------------------------------------------
    async def chain_next_seq(self) -> int:
        """``nextSeq()`` at the latest block."""
        raw = await self.w3.eth.call({"to": self.contract, "data": _NEXT_SEQ})
        return int.from_bytes(bytes(raw)[-32:], "big")

    def _decode(self, err: ContractLogicError) -> ContractRevert:
        data = err.data if isinstance(err.data, str) else None
        if data and data.startswith("0x"):
            return self.errors.decode(bytes.fromhex(data[2:]))
        return ContractRevert(str(err.message or err), (), b"")

    async def _replay(self, tx: dict[str, Any]) -> ContractRevert | None:
        """eth_call ``tx`` at latest; the decoded revert, or None if it would succeed."""
        try:
            await self.w3.eth.call(tx)  # type: ignore[arg-type]
        except ContractLogicError as err:
            return self._decode(err)
        return None

    # --- main loop --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to return once in-flight transactions are resolved."""
        self._stop.set()

    async def run(self) -> None:
        """Settle until the source ends (everything settled) or :meth:`stop`.

        Raises :class:`RelayerError` when a batch keeps failing for a non-ordering reason.
        """
        self._chain_id = await self.w3.eth.chain_id
        self._nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
        while True:
            next_seq = await self.chain_next_seq()
            if await self._session(next_seq):
                return

    async def _read(self, it: AsyncIterator[tuple[int, Item]], q: asyncio.Queue[tuple[int, Item] | None]) -> None:
        async for pair in it:
            await q.put(pair)
        await q.put(None)

    async def _session(self, next_seq: int) -> bool:
        """Settle from ``next_seq`` until done (True) or until the chain wants a resync (False)."""
        log.info("relayer %s resuming at seq %d", self.account.address, next_seq)
        self.batcher.reset(next_seq)
        q: asyncio.Queue[tuple[int, Item] | None] = asyncio.Queue(self.cfg.queue_items)
        reader = asyncio.create_task(self._read(self.source.stream(next_seq), q))
        in_flight: deque[_Tx] = deque()
        source_done = False
        held: Batch | None = None
        held_behind = 0
        try:
            while True:
                now = self.clock()
                while not q.empty():
                    pair = q.get_nowait()
                    if pair is None:
                        source_done = True
                        break
                    self._add(pair, now)
                stopping = self._stop.is_set()
                # a batch the node could not simulate behind the ones in flight (its next block is
                # full) waits until one of them is mined, then tries again
                if held is not None and len(in_flight) < held_behind:
                    pending_batch, held = held, None
                else:
                    pending_batch = None
                while held is None and len(in_flight) < self.cfg.max_in_flight and not stopping:
                    batch = pending_batch or self.batcher.take(now, force=source_done)
                    pending_batch = None
                    if batch is None:
                        break
                    tx = await self._send(batch, pipelined=bool(in_flight))
                    if tx is _HOLD:
                        held, held_behind = batch, len(in_flight)
                        break
                    if tx is None:  # estimate said the chain moved on or the batch fails
                        await self._drain(in_flight)
                        return False
                    assert isinstance(tx, _Tx)
                    in_flight.append(tx)
                if in_flight:
                    ok = await self._check(in_flight)
                    if not ok:
                        await self._drain(in_flight)
                        return False
                elif stopping or (source_done and self.batcher.pending == 0 and held is None):
                    return True
                # wait for the next item, the batch deadline, or the next receipt poll
                timeout = self.cfg.poll_interval_s if in_flight else 1.0
                deadline = self.batcher.deadline()
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - self.clock()))
                if source_done or stopping:
                    await asyncio.sleep(timeout)
                    continue
                try:
                    pair = await asyncio.wait_for(q.get(), timeout)
                except asyncio.TimeoutError:
                    continue
                if pair is None:
                    source_done = True
                else:
                    self._add(pair, self.clock())
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - reader is being discarded
                pass

    def _add(self, pair: tuple[int, Item], now: float) -> None:
        seq, item = pair
        if self.batcher.add(seq, item, now):
            t = self.source.matched_at(seq)
            self.lag.matched(seq, now if t is None else t)

    # --- sending ----------------------------------------------------------------------------
    @staticmethod
    def _fees(head: Any, tip: int) -> tuple[int, int]:
        """(max fee, tip) per gas for a transaction meant for the block after ``head``."""
        base = int(head.get("baseFeePerGas", 0) or 0)
        return 2 * base + tip, tip

    def _sign(self, tx: _Tx) -> bytes:
        signed = self.account.sign_transaction({
            "type": 2, "chainId": self._chain_id, "nonce": tx.nonce, "to": self.contract,
            "data": tx.data, "gas": tx.gas, "maxFeePerGas": tx.max_fee,
            "maxPriorityFeePerGas": tx.tip, "value": 0,
        })
        return bytes(signed.raw_transaction)

    def _calibrate(self, used: int, bound: int) -> None:
        """Size the next batches by what this one's simulation used against the batcher's bound
        (the highest ratio of the last few, plus headroom: the flow's mix drifts)."""
        self._ratios.append((used, bound))
        u, b = max(self._ratios, key=lambda r: r[0] * 1_000_000 // max(1, r[1]))
        self.batcher.set_gas_scale(int(u * self.cfg.calibration_headroom), b)

    def _split(self, batch: Batch, why: str) -> None:
        """No block can hold ``batch`` (the calibration was behind a costlier mix): settle its
        items in halves, from the chain's nextSeq (the session restarts there)."""
        log.warning("batch %d+%d %s: splitting", batch.first_seq, batch.count, why)
        self.splits += 1
        self.batcher.set_item_cap(max(1, batch.count // 2))

    async def _runs_within(self, call: dict[str, Any], gas: int, block: str) -> bool:
        """Whether ``call`` completes with a gas limit of ``gas`` (one execution)."""
        try:
            await self.w3.eth.call(dict(call, gas=gas), block)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - out of gas, or anything else: the safe margin serves
            return False
        return True

    async def _send(self, batch: Batch, pipelined: bool) -> _Tx | _Held | None:
        """Send ``batch``; None when it must not be sent (the chain moved on, it fails, or it
        cannot fit a block and was split), :data:`_HOLD` when it should wait for the
        transactions ahead of it to be mined."""
        data = settle_calldata(batch.encode())
        call = {"from": self.account.address, "to": self.contract, "data": data}
        block = "pending" if pipelined else "latest"
        head = await self.w3.eth.get_block("latest")
        gas_cap = min(int(head["gasLimit"]), self.cfg.tx_gas_cap)  # what one transaction may use
        try:
            # The gas limit reserves block space, so it must be close to what the batch needs: the
            # batcher's bound assumes every slot is fresh and would let a block carry a fraction of
            # what fits. One execution (eth_createAccessList reports its gasUsed) is several times
            # cheaper than eth_estimateGas's search; behind batches still in flight, "pending" runs
            # this one on top of them (anvil and geth-style nodes execute their pool there).
            sim = await self.w3.eth.create_access_list(call, block)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - any node refusal is handled below
            if pipelined:
                # the node's pending block does not hold all of our earlier batches (it is full) or
                # cannot show them: sending now would need the worst-case bound, which reserves
                # most of a block, so wait for the batches ahead to be mined
                log.debug("pending simulation failed for batch %d+%d: %s", batch.first_seq, batch.count, err)
                return _HOLD
            # nothing in flight, so latest state is what this tx will see: find out why it fails
            try:
                await self.w3.eth.estimate_gas(call)  # type: ignore[arg-type]
            except ContractLogicError as cle:
                rev = self._decode(cle)
                if rev.name == "EmptyRevert" and batch.count > 1:
                    # no revert data: out of gas within the node's cap (a block's or EIP-7825's)
                    self._split(batch, "runs out of gas within what the node allows a call")
                else:
                    await self._failed(batch, rev, "estimate")
                return None
            log.warning("simulation of batch %d+%d failed (%s); sending with the bound",
                        batch.first_seq, batch.count, err)
            gas = min(int(batch.gas_estimate), gas_cap)
        else:
            used = int(sim["gasUsed"])
            self._calibrate(used, batch.gas_estimate)
            gas = int(used * self.gas_margin) + 50_000
            if not await self._runs_within(call, gas, block):
                gas = int(used * self.refund_margin) + 50_000
            if gas > gas_cap and batch.count > 1:
                self._split(batch, f"needs a gas limit of {gas}, more than a transaction may have ({gas_cap})")
                return None
            gas = min(gas, gas_cap)
        max_fee, tip = self._fees(head, self.cfg.priority_fee_wei)
        tx = _Tx(batch, self._nonce, gas, max_fee, tip, data, [], self.clock())
        for attempt in range(5):
            try:
                tx.hashes.append(bytes(await self.w3.eth.send_raw_transaction(self._sign(tx))))
                break
            except Exception as err:  # noqa: BLE001 - node refused: usually a stale nonce
                if attempt == 4:
                    raise RelayerError(f"cannot send batch {batch.first_seq}+{batch.count}: {err}") from err
                log.warning("send failed (%s); resyncing nonce", err)
                await asyncio.sleep(0.05 * (attempt + 1))
                tx.nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
        self._nonce = tx.nonce + 1
        log.debug("sent batch %d+%d nonce %d", batch.first_seq, batch.count, tx.nonce)
        return tx

    async def _bump(self, tx: _Tx) -> None:
        """Replace a stuck transaction: same nonce, fees raised by ``fee_bump``."""
        tx.max_fee = int(tx.max_fee * self.cfg.fee_bump) + 1
        tx.tip = int(tx.tip * self.cfg.fee_bump) + 1
        tx.sent_at = self.clock()
        try:
            tx.hashes.append(bytes(await self.w3.eth.send_raw_transaction(self._sign(tx))))
            log.warning("bumped fees of nonce %d (batch %d) to %d", tx.nonce, tx.batch.first_seq, tx.max_fee)
        except Exception as err:  # noqa: BLE001 - e.g. "nonce too low": an earlier version was mined
            log.info("replacement of nonce %d not accepted: %s", tx.nonce, err)

    async def _receipt(self, tx: _Tx) -> Any | None:
        for h in reversed(tx.hashes):
            try:
                return await self.w3.eth.get_transaction_receipt(h)  # type: ignore[arg-type]
            except TransactionNotFound:
                continue
        return None

    async def _check(self, in_flight: deque[_Tx]) -> bool:
        """Resolve mined transactions at the front; False if one failed (resync needed)."""
        while in_flight:
            tx = in_flight[0]
            receipt = await self._receipt(tx)
            if receipt is None:
                if self.clock() - tx.sent_at > self.cfg.stuck_after_s:
                    await self._bump(tx)
                return True
            in_flight.popleft()
            if not await self._resolved(tx, receipt):
                return False
        return True

    async def _resolved(self, tx: _Tx, receipt: Any) -> bool:
        if receipt["status"] == 1:
            for ev in self.events.decode_logs(receipt["logs"]):
                if isinstance(ev, ChainBatchSettled):
                    self.settled.append(ev)
                    self.lag.settled(ev.first_seq, ev.count, self.clock())
                    for seq, reason in ev.rejected:
                        log.warning("item %d rejected on-chain: reason %d", seq, reason)
                    if self.on_settled is not None:
                        self.on_settled(ev)
            self.failures = 0
            self.batcher.set_item_cap(None)
            return True
        # mined but reverted. A transaction that burnt (nearly) its whole limit ran out of gas: the
        # 1/64 kept back by the delegatecall is all that is left, and the revert data is empty.
        # Otherwise replay it to learn why (at the state now, so it may also just succeed).
        rev: ContractRevert | None
        if int(receipt["gasUsed"]) >= tx.gas * 95 // 100:
            rev = ContractRevert("OutOfGas", (), b"")
        else:
            rev = await self._replay({"from": self.account.address, "to": self.contract, "data": tx.data,
                                      "gas": tx.gas})
            if rev is None:
                rev = ContractRevert("Unknown", (), b"")
        await self._failed(tx.batch, rev, "receipt")
        return False

    async def _failed(self, batch: Batch, rev: ContractRevert, where: str) -> None:
        """Classify a failed batch; raises :class:`RelayerError` once failures are exhausted."""
        self.reverts.append(rev)
        chain_next = await self.chain_next_seq()
        if rev.name == "BatchOutOfOrder" or chain_next != batch.first_seq:
            # someone else settled (or an earlier batch of ours failed): not a failure of this batch
            log.info("batch %d+%d out of order (%s, chain nextSeq %d): resyncing",
                     batch.first_seq, batch.count, rev, chain_next)
            return
        self.failures += 1
        if rev.name == "OutOfGas":
            self.gas_margin = min(self.cfg.max_gas_margin, self.gas_margin + 0.1)
            self.refund_margin = min(self.cfg.max_gas_margin, self.refund_margin + 0.1)
        log.error("batch %d+%d failed at %s: %s (failure %d of %d)", batch.first_seq, batch.count,
                  where, rev, self.failures, self.cfg.max_failures)
        if self.failures >= self.cfg.max_failures:
            raise RelayerError(
                f"batch at seq {batch.first_seq} ({batch.count} items) keeps failing: {rev}; "
                f"stopped after {self.failures} attempts", rev)
        self.batcher.set_item_cap(max(1, batch.count // 2))

    async def _drain(self, in_flight: deque[_Tx]) -> None:
        """Wait for every in-flight transaction to be mined before resyncing (they would
        otherwise race the resubmissions for the same sequence numbers)."""
        deadline = self.clock() + 10 * self.cfg.stuck_after_s
        while in_flight:
            tx = in_flight[0]
            receipt = await self._receipt(tx)
            if receipt is None:
                if self.clock() > deadline:
                    raise RelayerError(f"transaction with nonce {tx.nonce} never mined")
                if self.clock() - tx.sent_at > self.cfg.stuck_after_s:
                    await self._bump(tx)
                await asyncio.sleep(self.cfg.poll_interval_s)
                continue
            in_flight.popleft()
            if receipt["status"] == 1:
                await self._resolved(tx, receipt)
        self._nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")


def connect(rpc_url: str, timeout: float = 30.0) -> AsyncWeb3:
    """An AsyncWeb3 on an HTTP JSON-RPC endpoint."""
    return AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))


async def _main_async(args: argparse.Namespace) -> None:
    from settlement.source import InMemorySource

    src = InMemorySource.load(args.items)
    cfg = RelayerConfig(limits=BatchLimits(max_items=args.max_items, max_age_s=args.max_age),
                        max_in_flight=args.in_flight)
    relayer = Relayer(connect(args.rpc), args.contract, args.key, src, cfg)
    await relayer.run()


def main(argv: list[str] | None = None) -> None:
    """``python -m settlement.relayer --rpc URL --contract ADDR --key HEX --items FILE``:
    settle a msgpack file of items (see :meth:`InMemorySource.dump`), then exit."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rpc", required=True)
    p.add_argument("--contract", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--items", required=True)
    p.add_argument("--max-items", type=int, default=10)
    p.add_argument("--max-age", type=float, default=0.05)
    p.add_argument("--in-flight", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_main_async(args))


if __name__ == "__main__":
    main()
