"""Chain watcher: decodes the clearinghouse's logs (sans-I/O) and follows the chain (async).

The follower reads logs up to ``head - confirmations``, remembers the hash of each recently
processed block, and on every poll checks that its last block is still on the chain; if not it
walks back to the newest block whose hash still matches, emits :class:`ChainReorg` and
re-reads from there. Its position (block + hash + recent hashes) lives in a small JSON state
file written atomically (tmp + fsync + rename) after the consumer has taken the events, so
delivery is at-least-once: after a crash the last poll's events may come again, and consumers
de-duplicate by ``(block_hash, log_index)``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import msgspec
from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from crossbook.chain.artifacts import load_artifact
from settlement.events import (
    ChainAgentSet,
    ChainBadDebtSettled,
    ChainBatchSettled,
    ChainCollateralLiquidated,
    ChainDeleveraged,
    ChainDeposit,
    ChainEvent,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    ChainFundingUpdated,
    ChainLiquidated,
    ChainLiquidationParamsSet,
    ChainReorg,
    ChainWithdrawn,
    WatcherOutput,
)

log = logging.getLogger(__name__)


def _bytes(x: Any) -> bytes:
    """HexBytes, bytes or a 0x string (raw JSON-RPC) -> bytes."""
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    s = str(x)
    return bytes.fromhex(s[2:] if s[:2] in ("0x", "0X") else s)


def _hex(x: Any) -> str:
    return "0x" + _bytes(x).hex()


def _int(x: Any) -> int:
    return x if isinstance(x, int) else int(str(x), 16)


def _event_signature(ev: Mapping[str, Any]) -> str:
    return f"{ev['name']}(" + ",".join(str(i["type"]) for i in ev["inputs"]) + ")"


class EventDecoder:
    """Turns raw clearinghouse logs into typed chain events. Pure: no I/O.

    ``ItemRejected`` logs are folded into the ``BatchSettled`` of the same transaction, and the
    ``Withdrawn`` log right before a ``ForcedWithdrawalExecuted`` into it (owner, amount...), so
    :meth:`decode_logs` needs every log of a transaction in one call (``eth_getLogs`` over a
    block range and a receipt's logs both give that).
    """

    NAMES = ("Deposit", "BatchSettled", "ItemRejected", "Withdrawn", "AgentSet",
             "ForcedWithdrawalRequested", "ForcedWithdrawalExecuted", "FundingUpdated",
             "Liquidated", "CollateralLiquidated", "BadDebtSettled", "Deleveraged",
             "LiquidationParamsSet")

    def __init__(self, abi: Iterable[Mapping[str, Any]] | None = None, address: str | None = None) -> None:
        if abi is None:
            abi = load_artifact("Clearinghouse").abi
        self.address = address.lower() if address else None
        self._events: dict[bytes, tuple[str, list[Mapping[str, Any]]]] = {}
        for item in abi:
            if item.get("type") == "event" and item["name"] in self.NAMES:
                self._events[keccak(text=_event_signature(item))] = (item["name"], list(item["inputs"]))

    @property
    def topics(self) -> list[str]:
        """topic0 of every event this decoder knows (for an ``eth_getLogs`` filter)."""
        return ["0x" + t.hex() for t in self._events]

    def topic(self, name: str) -> str:
        """topic0 of the event ``name`` (for an ``eth_getLogs`` filter on that event alone)."""
        return next("0x" + t.hex() for t, (n, _) in self._events.items() if n == name)

    def _args(self, log_: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        topics = [_bytes(t) for t in log_["topics"]]
        if not topics or topics[0] not in self._events:
            return None
        if self.address and str(log_["address"]).lower() != self.address:
            return None
        name, inputs = self._events[topics[0]]
        indexed = [i for i in inputs if i.get("indexed")]
        plain = [i for i in inputs if not i.get("indexed")]
        args: dict[str, Any] = {}
        for inp, topic in zip(indexed, topics[1:]):
            args[inp["name"]] = abi_decode([inp["type"]], topic)[0]
        values = abi_decode([i["type"] for i in plain], _bytes(log_["data"]))
        args.update({i["name"]: v for i, v in zip(plain, values)})
        return name, args

    def decode_logs(self, logs: Iterable[Mapping[str, Any]]) -> list[ChainEvent]:
        """Decode logs in chain order; unknown logs (other contracts, other events) are skipped."""
        out: list[ChainEvent] = []
        rejected: dict[bytes, list[tuple[int, int]]] = {}
        # the last Withdrawn of each transaction: _executeForced emits it immediately before
        # ForcedWithdrawalExecuted, which alone does not say whose balance moved
        withdrawn: dict[bytes, ChainWithdrawn] = {}
        for lg in logs:
            decoded = self._args(lg)
            if decoded is None:
                continue
            name, a = decoded
            tx = _bytes(lg["transactionHash"])
            pos: dict[str, Any] = dict(block_number=_int(lg["blockNumber"]), block_hash=_hex(lg["blockHash"]),
                       log_index=_int(lg["logIndex"]), tx_hash="0x" + tx.hex())
            if name == "ItemRejected":
                rejected.setdefault(tx, []).append((int(a["seq"]), int(a["reason"])))
                continue
            ev: ChainEvent
            if name == "Deposit":
                ev = ChainDeposit(owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"],
                                  asset=a["asset"], amount=a["amount"], **pos)
            elif name == "BatchSettled":
                first, count = int(a["firstSeq"]), int(a["count"])
                mine = [r for r in rejected.pop(tx, []) if first <= r[0] < first + count]
                ev = ChainBatchSettled(first_seq=first, count=count, rejected=mine, **pos)
                if len(mine) != int(a["rejected"]):
                    log.warning("BatchSettled at %s says %d rejected, saw %d ItemRejected logs",
                                pos["tx_hash"], a["rejected"], len(mine))
            elif name == "Withdrawn":
                ev = ChainWithdrawn(owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"],
                                    asset=a["asset"], amount=a["amount"], seq=a["seq"], **pos)
                withdrawn[tx] = ev
            elif name == "AgentSet":
                ev = ChainAgentSet(owner=to_checksum_address(a["owner"]), agent=to_checksum_address(a["agent"]),
                                   approved=bool(a["approved"]), **pos)
            elif name == "ForcedWithdrawalRequested":
                ev = ChainForcedWithdrawalRequested(
                    request_id=a["requestId"], owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"],
                    asset=a["asset"], amount=a["amount"], executable_at=a["executableAt"], **pos)
            elif name == "ForcedWithdrawalExecuted":
                w = withdrawn.pop(tx, None)
                if w is None:
                    log.warning("ForcedWithdrawalExecuted at %s without a Withdrawn log", pos["tx_hash"])
                    ev = ChainForcedWithdrawalExecuted(request_id=a["requestId"], **pos)
                else:
                    ev = ChainForcedWithdrawalExecuted(
                        request_id=a["requestId"], owner=w.owner, subaccount=w.subaccount, asset=w.asset,
                        amount=w.amount, seq=w.seq, **pos)
            elif name == "Liquidated":
                ev = ChainLiquidated(
                    owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"], market=a["market"],
                    liquidator=to_checksum_address(a["liquidator"]),
                    liquidator_subaccount=a["liquidatorSubaccount"], size_delta=a["sizeDelta"],
                    price=a["price"], penalty=a["penalty"], insurance_share=a["insuranceShare"], **pos)
            elif name == "CollateralLiquidated":
                ev = ChainCollateralLiquidated(
                    owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"], asset=a["asset"],
                    liquidator=to_checksum_address(a["liquidator"]),
                    liquidator_subaccount=a["liquidatorSubaccount"], amount=a["amount"], price=a["price"],
                    paid=a["paid"], **pos)
            elif name == "BadDebtSettled":
                ev = ChainBadDebtSettled(
                    owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"],
                    insurance_paid=a["insurancePaid"], fee_pool_paid=a["feePoolPaid"], unbacked=a["unbacked"],
                    **pos)
            elif name == "Deleveraged":
                ev = ChainDeleveraged(
                    owner=to_checksum_address(a["owner"]), subaccount=a["subaccount"], market=a["market"],
                    counterparty=to_checksum_address(a["counterparty"]),
                    counterparty_subaccount=a["counterpartySubaccount"], size_delta=a["sizeDelta"],
                    price=a["price"], **pos)
            elif name == "LiquidationParamsSet":
                ev = ChainLiquidationParamsSet(
                    penalty_ppm=a["penaltyPpm"], insurance_share_ppm=a["insuranceSharePpm"],
                    buffer_ppm=a["bufferPpm"], critical_ppm=a["criticalPpm"], **pos)
            else:  # FundingUpdated
                ev = ChainFundingUpdated(market=a["market"], rate_ppm=a["ratePpm"],
                                         cumulative_index=a["cumulativeIndex"], **pos)
            out.append(ev)
        return out


# ---------------------------------------------------------------------------------------------
# persisted position


class WatcherState(msgspec.Struct):
    """Last processed block and the hashes of recent processed blocks (for reorg detection)."""

    block_number: int
    block_hash: str
    recent: list[tuple[int, str]] = []

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(self))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "WatcherState | None":
        """The saved state, or None if there is none yet."""
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except FileNotFoundError:
            return None


Emit = Callable[[WatcherOutput], Awaitable[None] | None]


class ChainWatcher:
    """Follows the clearinghouse's events with ``confirmations`` blocks of safety."""

    def __init__(self, w3: AsyncWeb3, contract: str, state_path: Path | str, *, start_block: int = 0,
                 confirmations: int = 0, poll_interval_s: float = 0.5, max_range: int = 2_000,
                 history: int = 128, decoder: EventDecoder | None = None) -> None:
        self.w3 = w3
        self.contract = to_checksum_address(contract)
        self.state_path = Path(state_path)
        self.start_block = start_block
        self.confirmations = confirmations
        self.poll_interval_s = poll_interval_s
        self.max_range = max_range
        self.history = history
        self.decoder = decoder or EventDecoder(address=self.contract)
        self.state = WatcherState.load(self.state_path)
        self._stop = asyncio.Event()

    @property
    def last_block(self) -> int:
        """The last block fully processed (``start_block - 1`` before the first poll)."""
        return self.state.block_number if self.state else self.start_block - 1

    async def _hash(self, number: int) -> str | None:
        try:
            blk = await self.w3.eth.get_block(number)
        except Exception:  # noqa: BLE001 - block gone (reorged below head or not yet there)
            return None
        return _hex(blk["hash"])

    async def _check_reorg(self) -> ChainReorg | None:
        st = self.state
        if st is None or await self._hash(st.block_number) == st.block_hash:
            return None
        common = (self.start_block - 1, "")
        for number, h in reversed(st.recent):
            if number < st.block_number and await self._hash(number) == h:
                common = (number, h)
                break
        else:
            log.warning("reorg deeper than the %d remembered blocks: replaying from block %d",
                        self.history, self.start_block)
        log.warning("reorg: block %d changed, rewinding to %d", st.block_number, common[0])
        recent = [(n, h) for n, h in st.recent if n <= common[0]]
        self.state = WatcherState(common[0], common[1], recent) if common[1] else None
        return ChainReorg(common_block=common[0], common_hash=common[1])

    async def poll(self) -> tuple[list[WatcherOutput], WatcherState | None]:
        """One step: reorg check, then logs of the next confirmed range.

        Returns the outputs and the state to :meth:`commit` once they were handled.
        """
        out: list[WatcherOutput] = []
        reorg = await self._check_reorg()
        if reorg is not None:
            out.append(reorg)
        head = await self.w3.eth.block_number
        target = head - self.confirmations
        frm = self.last_block + 1
        if target < frm:
            return out, self.state
        to = min(target, frm + self.max_range - 1)
        before = await self._hash(to)
        logs = await self.w3.eth.get_logs({"address": self.contract, "fromBlock": frm, "toBlock": to})
        after = await self._hash(to)
        if before is None or before != after:
            return out, self.state  # the chain moved under us; next poll re-checks
        out.extend(self.decoder.decode_logs(logs))
        lo = max(frm, to - self.history + 1)
        hashes = await asyncio.gather(*(self._hash(n) for n in range(lo, to)))
        recent = list(self.state.recent if self.state else [])
        recent += [(n, h) for n, h in zip(range(lo, to), hashes) if h is not None] + [(to, after)]
        return out, WatcherState(to, after, recent[-self.history:])

    def commit(self, state: WatcherState | None) -> None:
        """Make ``state`` the persisted position (call after the outputs were handled)."""
        self.state = state
        if state is not None:
            state.save(self.state_path)
        else:
            self.state_path.unlink(missing_ok=True)

    async def poll_and_commit(self) -> list[WatcherOutput]:
        """:meth:`poll` then :meth:`commit`: for callers that handle outputs synchronously."""
        out, state = await self.poll()
        self.commit(state)
        return out

    async def run(self, emit: Emit) -> None:
        """Poll until :meth:`stop`, handing every output to ``emit`` (sync or async) in order."""
        while not self._stop.is_set():
            out, state = await self.poll()
            for ev in out:
                r = emit(ev)
                if inspect.isawaitable(r):
                    await r
            self.commit(state)
            if not out:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.poll_interval_s)
                except asyncio.TimeoutError:
                    pass

    def stop(self) -> None:
        """Make :meth:`run` return after the current poll."""
        self._stop.set()
