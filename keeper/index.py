"""Sub-account index for the keeper, built from the clearinghouse's events and its views.

Fills are not visible on-chain per account (a batch emits one ``BatchSettled``), so the index
learns *which* sub-accounts exist from ``Deposit`` / ``Withdrawn`` / ``Liquidated`` events, and
*what changed* in a batch by decoding the ``settle(bytes)`` calldata of its transaction (every
fill, withdrawal and transfer names its sub-accounts). The state itself is always read back from
the contract views (``quoteBalance``, ``collateralBalance``, ``position``), many calls per
JSON-RPC batch request, several batches in flight; a periodic full sweep re-reads everything and
repairs whatever the incremental path missed (a settle sent through another contract, a reorg).

Events come from :class:`settlement.watcher.ChainWatcher` (confirmations and reorg handling
live there) through the watcher's own decoder, liquidation events included. The index is
memory-only and rebuilt from the deployment block at every start (invariant 7: resume from
what the chain says).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from crossbook.batch_codec import decode_batch
from crossbook.margin import Position, RiskParams, SubAccount
from crossbook.protocol_types import FillItem, TransferItem, WithdrawItem
from keeper.health_scan import HealthBook
from settlement.events import (
    ChainBadDebtSettled, ChainBatchSettled, ChainCollateralLiquidated, ChainDeleveraged,
    ChainDeposit, ChainFundingUpdated, ChainLiquidated, ChainReorg, ChainWithdrawn, WatcherOutput,
)
from settlement.watcher import ChainWatcher, EventDecoder, _bytes

log = logging.getLogger(__name__)

AccountKey = tuple[str, int]  # (checksummed owner, subaccount)

# ---------------------------------------------------------------------------------------------
# batched views


def _sel(sig: str) -> bytes:
    return keccak(text=sig)[:4]


_QUOTE = _sel("quoteBalance(address,uint32)")
_COLL = _sel("collateralBalance(address,uint32,uint16)")
_POS = _sel("position(address,uint32,uint32)")
_SETTLE = _sel("settle(bytes)")


class RpcBatch:
    """JSON-RPC batch requests over one HTTP session: ``eth_call`` many views per POST and
    several POSTs in flight (one round trip per ``chunk`` calls instead of per call)."""

    def __init__(self, url: str, chunk: int = 400, parallel: int = 4) -> None:
        self.url = url
        self.chunk = chunk
        self.sem = asyncio.Semaphore(parallel)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def _post(self, reqs: list[dict[str, Any]]) -> list[Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        async with self.sem, self._session.post(self.url, data=json.dumps(reqs),
                                                headers={"Content-Type": "application/json"}) as resp:
            body = await resp.json(content_type=None)
        if not isinstance(body, list):
            raise RuntimeError(f"batch request refused: {body}")
        by_id = {r["id"]: r for r in body}
        return [by_id.get(r["id"]) for r in reqs]

    async def eth_calls(self, calls: Sequence[tuple[str, bytes]], block: str | int = "latest") -> list[bytes | None]:
        """Results of ``eth_call`` for each ``(to, data)``; None where the call reverted."""
        tag = block if isinstance(block, str) else hex(block)
        reqs = [{"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_call",
                 "params": [{"to": to, "data": "0x" + data.hex()}, tag]} for to, data in calls]
        parts = await asyncio.gather(*(self._post(reqs[i:i + self.chunk]) for i in range(0, len(reqs), self.chunk)))
        out: list[bytes | None] = []
        for part in parts:
            for r in part:
                out.append(bytes.fromhex(r["result"][2:]) if r and "result" in r else None)
        return out

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_accounts(rpc: RpcBatch, contract: str, keys: Sequence[AccountKey], assets: Sequence[int],
                        markets: Sequence[int], block: str | int = "latest") -> dict[AccountKey, SubAccount]:
    """Read full sub-account state for ``keys`` at ``block`` (one consistent block for all).

    Raises RuntimeError if any view call failed (the caller retries; a half-read account must
    never reach the health book).
    """
    contract = to_checksum_address(contract)
    calls: list[tuple[str, bytes]] = []
    for owner, sub in keys:
        calls.append((contract, _QUOTE + abi_encode(["address", "uint32"], [owner, sub])))
        calls += [(contract, _COLL + abi_encode(["address", "uint32", "uint16"], [owner, sub, a])) for a in assets]
        calls += [(contract, _POS + abi_encode(["address", "uint32", "uint32"], [owner, sub, m])) for m in markets]
    res = await rpc.eth_calls(calls, block)
    if any(r is None for r in res):
        raise RuntimeError("a view call failed while reading accounts")
    it = iter(res)
    out: dict[AccountKey, SubAccount] = {}
    for key in keys:
        acct = SubAccount(quote=abi_decode(["int256"], next(it))[0])  # type: ignore[arg-type]
        for a in assets:
            amount = abi_decode(["uint256"], next(it))[0]  # type: ignore[arg-type]
            if amount:
                acct.collateral[a] = amount
        for m in markets:
            size, on, snap = abi_decode(["int256", "int256", "int256"], next(it))  # type: ignore[arg-type]
            if size or on:
                acct.positions[m] = Position(size, on, snap)
        out[key] = acct
    return out


def accounts_in_batch(calldata: bytes) -> set[AccountKey]:
    """Sub-accounts a ``settle(bytes)`` call touches (empty for other calldata)."""
    if calldata[:4] != _SETTLE:
        return set()
    try:
        (batch,) = abi_decode(["bytes"], calldata[4:])
        _, items = decode_batch(batch)
    except Exception:  # noqa: BLE001 - not a batch we understand: the sweep covers it
        return set()
    keys: set[AccountKey] = set()
    for it in items:
        if isinstance(it, FillItem):
            keys.add((to_checksum_address(it.taker.owner), it.taker.subaccount))
            keys.add((to_checksum_address(it.maker.owner), it.maker.subaccount))
        elif isinstance(it, WithdrawItem):
            keys.add((to_checksum_address(it.withdrawal.owner), it.withdrawal.subaccount))
        elif isinstance(it, TransferItem):
            owner = to_checksum_address(it.transfer.owner)
            keys.add((owner, it.transfer.from_subaccount))
            keys.add((owner, it.transfer.to_subaccount))
    return keys


# ---------------------------------------------------------------------------------------------
# the index


class SubAccountIndex:
    """Known sub-accounts, their state (in a :class:`HealthBook`) and what needs re-reading."""

    def __init__(self, w3: AsyncWeb3, rpc_url: str, contract: str, params: RiskParams, *,
                 start_block: int = 0, confirmations: int = 0, state_path: Path | str | None = None,
                 sweep_interval_s: float = 60.0, poll_interval_s: float = 0.25) -> None:
        self.w3 = w3
        self.contract = to_checksum_address(contract)
        self.params = params
        self.rpc = RpcBatch(rpc_url)
        self.book = HealthBook(params)
        self.assets = sorted(a for a in params.collaterals if a != 0)
        self.markets = sorted(params.markets)
        # memory-only index: always rebuild from start_block. The watcher still wants a file for its
        # reorg bookkeeping; a private directory keeps several keepers on one machine apart.
        path = Path(state_path) if state_path else Path(tempfile.mkdtemp(prefix="crossbook-keeper-")) / "index.json"
        path.unlink(missing_ok=True)
        self.decoder = EventDecoder(address=self.contract)
        self.watcher = ChainWatcher(w3, self.contract, path, start_block=start_block, confirmations=confirmations,
                                    poll_interval_s=poll_interval_s, decoder=self.decoder)
        self.known: set[AccountKey] = set()
        self.dirty: set[AccountKey] = set()
        self.sweep_interval_s = sweep_interval_s
        self.last_sweep = 0.0
        self.events_seen = 0
        self._stop = asyncio.Event()

    def key_of(self, row: int) -> AccountKey:
        """The account at a health-book row."""
        key = self.book.keys[row]
        assert isinstance(key, tuple)
        return key

    def _touch(self, owner: str, sub: int) -> None:
        key = (to_checksum_address(owner), int(sub))
        self.known.add(key)
        self.dirty.add(key)

    async def apply(self, events: Iterable[WatcherOutput]) -> None:
        """Fold watcher outputs into the index (marks accounts for re-reading)."""
        funding: dict[int, int] = {}
        for ev in events:
            self.events_seen += 1
            if isinstance(ev, (ChainDeposit, ChainWithdrawn, ChainBadDebtSettled)):
                self._touch(ev.owner, ev.subaccount)
            elif isinstance(ev, (ChainLiquidated, ChainCollateralLiquidated)):
                self._touch(ev.owner, ev.subaccount)
                # the liquidator's sub-account took the position or collateral over
                self._touch(ev.liquidator, ev.liquidator_subaccount)
            elif isinstance(ev, ChainDeleveraged):
                self._touch(ev.owner, ev.subaccount)
                self._touch(ev.counterparty, ev.counterparty_subaccount)
            elif isinstance(ev, ChainBatchSettled):
                if ev.count:
                    await self._batch_accounts(ev.tx_hash)
            elif isinstance(ev, ChainFundingUpdated):
                funding[ev.market] = ev.cumulative_index
            elif isinstance(ev, ChainReorg):
                self.dirty |= self.known  # reorged state: re-read everything we know
        if funding:
            self.book.set_funding(funding)

    async def _batch_accounts(self, tx_hash: str) -> None:
        try:
            tx = await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except Exception as err:  # noqa: BLE001 - the periodic sweep repairs a miss
            log.warning("cannot read batch tx %s: %s", tx_hash, err)
            return
        for owner, sub in accounts_in_batch(_bytes(tx["input"])):
            self._touch(owner, sub)

    async def refresh(self, keys: Iterable[AccountKey] | None = None, block: str | int = "latest") -> int:
        """Re-read ``keys`` (default: every dirty account) into the health book; returns how many."""
        todo = sorted(self.dirty if keys is None else set(keys))
        if not todo:
            return 0
        step = 2_000
        for i in range(0, len(todo), step):
            part = todo[i:i + step]
            accts = await read_accounts(self.rpc, self.contract, part, self.assets, self.markets, block)
            for key, acct in accts.items():
                self.book.set_account(key, acct)
                self.dirty.discard(key)
        return len(todo)

    async def load_funding(self) -> None:
        """Read every market's cumulative funding index (startup and sweeps)."""
        sel = _sel("cumulativeFunding(uint32)")
        res = await self.rpc.eth_calls([(self.contract, sel + abi_encode(["uint32"], [m])) for m in self.markets])
        self.book.set_funding({m: abi_decode(["int256"], r)[0] for m, r in zip(self.markets, res) if r is not None})

    async def sweep(self) -> int:
        """Full repair: funding indices and every known account re-read."""
        await self.load_funding()
        self.last_sweep = time.monotonic()
        return await self.refresh(self.known)

    async def sync(self) -> int:
        """Follow events up to the confirmed head, then re-read what they touched; returns the
        number of accounts re-read."""
        while True:
            out, state = await self.watcher.poll()
            await self.apply(out)
            self.watcher.commit(state)
            if not out or state is None:
                break
            head = await self.w3.eth.block_number
            if state.block_number >= head - self.watcher.confirmations:
                break
        return await self.refresh()

    async def run(self) -> None:
        """Sync continuously, with a full sweep every ``sweep_interval_s``."""
        await self.load_funding()
        while not self._stop.is_set():
            try:
                await self.sync()
                if time.monotonic() - self.last_sweep > self.sweep_interval_s:
                    await self.sweep()
            except Exception as err:  # noqa: BLE001 - node hiccup: retry next round
                log.warning("index sync failed: %s", err)
            try:
                await asyncio.wait_for(self._stop.wait(), self.watcher.poll_interval_s)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """Make :meth:`run` return."""
        self._stop.set()

    async def close(self) -> None:
        """Release the HTTP session."""
        await self.rpc.close()
