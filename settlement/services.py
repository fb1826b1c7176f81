"""The long-running services behind ``crossbook matcher | relayer | watcher``.

Each service resumes from what the chain and the matcher's journal say (invariant 7), never from
private memory:

- matcher: recovers the engine from its journal + newest snapshot, serves the websocket API,
  snapshots periodically and feeds the engine the oracle prices it reads from the chain.
- relayer: reads ``nextSeq()`` from the contract and follows the matcher's ``stream`` from there
  (:class:`~settlement.ws_source.WsItemSource`); the contract's ordering check makes a second or
  restarted relayer harmless.
- watcher: asks the matcher for its chain cursor (``chain_cursor`` op), follows the contract's
  logs from that block with ``confirmations`` blocks of safety and forwards each event with the
  authenticated ``chain`` op, one at a time and in order; the engine ignores anything at or
  before its cursor, so re-delivery after a crash is harmless.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import websockets
from web3 import AsyncWeb3
from websockets.asyncio.client import ClientConnection, connect

from crossbook import gc_policy
from crossbook.chain.artifacts import load_artifact
from crossbook.chain.deploy import Deployment
from crossbook.config import DEFAULT_SPEC, ExchangeSpec
from crossbook.metrics import (
    instrument_matcher, instrument_relayer, mark_ready, watcher_metrics,
)
from crossbook.shutdown import stop_event
from matcher.commands import Code
from settlement.batcher import BatchLimits
from settlement.events import ChainReorg, WatcherOutput
from settlement.relayer import Relayer, RelayerConfig, RelayerError
from settlement.relayer import connect as connect_rpc
from settlement.watcher import ChainWatcher
from settlement.ws_source import WsItemSource

log = logging.getLogger(__name__)


# ============================================================================ matcher


@dataclass
class MatcherOptions:
    """Configuration of ``crossbook matcher`` (flags / environment, see crossbook/cli.py)."""

    deployment: Deployment
    rpc_url: str
    journal_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    operator_token: str | None = None
    stream_token: str | None = None
    snapshot_every: int = 50_000  # journaled commands between snapshots
    snapshot_interval_s: float = 60.0  # and at least this often when anything changed
    snapshots_kept: int = 3  # older ones are deleted (recovery falls back to the previous ones)
    # the journal's active file is sealed at this size; sealed files that no kept snapshot
    # needs are deleted with the snapshots, so the disk holds the journal since the oldest one
    journal_segment_mb: int = 256
    oracle_poll_s: float = 0.25  # how often to look for a new block
    max_unsettled_per_account: int = 10_000
    max_unsettled_global: int = 1_000_000
    max_open_orders: int = 1_000
    max_nonce_words: int = 1_000_000  # EngineConfig.max_nonce_words_per_owner
    expiry_margin_s: int = 0
    gc_sweep_s: float = gc_policy.SWEEP_S  # cyclic-GC sweep period (0: CPython's own collector)
    busy_poll_us: int = 0  # ServerConfig.busy_poll_us


@dataclass(frozen=True)
class OracleUpdate:
    """One change of the oracle adapter's answers: new prices by asset id and market id, and the
    ids whose price it now refuses (``SetOraclePrices``'s fields)."""

    assets: dict[int, int]
    markets: dict[int, int]
    gone_assets: list[int]
    gone_markets: list[int]


class OraclePoller:
    """Reads the oracle adapter's prices once per new block and hands the engine the ones that
    changed (as ``SetOraclePrices``), so the pre-trade check uses the prices the contract will."""

    def __init__(self, w3: AsyncWeb3, oracle: str, spec: ExchangeSpec = DEFAULT_SPEC) -> None:
        self.w3 = w3
        self.oracle = w3.eth.contract(address=AsyncWeb3.to_checksum_address(oracle),
                                      abi=load_artifact("OracleAdapter").abi)
        self.spec = spec
        self.last_block = -1
        self.assets: dict[int, int] = {}
        self.markets: dict[int, int] = {}
        self._applied_once = False

    async def read(self) -> OracleUpdate | None:
        """What changed since the last read, or None when there is no new block or no change:
        new prices, and the ids whose price the adapter now refuses (stale, out of band). The
        matcher must not go on with a refused price the contract no longer takes: a market
        without one is in reduce-only mode (docs/protocol.md §9.8), and an account holding an
        asset without one can only do what needs no price of it."""
        block = await self.w3.eth.block_number
        if block == self.last_block:
            return None
        self.last_block = block
        feeds = sorted({f.feed_id for f in self.spec.feeds})
        got = await asyncio.gather(*(self.oracle.functions.tryPrice(f).call() for f in feeds))
        price = {f: int(p) for f, (ok, p) in zip(feeds, got) if ok and int(p) > 0}
        assets = {i + 1: price.get(c.feed_id) for i, c in enumerate(self.spec.collaterals)}
        markets = {i: price.get(m.feed_id) for i, m in enumerate(self.spec.markets)}
        # until the engine took a first update the poller cannot know which prices it holds (a
        # restarted matcher recovers its last ones from the journal): every refused id is news
        known = self._applied_once
        up = OracleUpdate(
            {k: v for k, v in assets.items() if v is not None and self.assets.get(k) != v},
            {k: v for k, v in markets.items() if v is not None and self.markets.get(k) != v},
            sorted(k for k, v in assets.items() if v is None and (k in self.assets or not known)),
            sorted(k for k, v in markets.items() if v is None and (k in self.markets or not known)))
        if not (up.assets or up.markets or up.gone_assets or up.gone_markets):
            return None
        return up

    def applied(self, up: OracleUpdate) -> None:
        """The engine took this update."""
        self._applied_once = True
        self.assets.update(up.assets)
        self.markets.update(up.markets)
        for a in up.gone_assets:
            self.assets.pop(a, None)
        for m in up.gone_markets:
            self.markets.pop(m, None)


# how far past the point where recovery stops the journal is searched for a whole record
_DAMAGE_SCAN_BYTES = 1 << 20


def journal_damage(journal: Path, valid: int) -> str | None:
    """Why the bytes of ``journal`` after offset ``valid`` (where recovery stops reading) are not
    a torn tail, or None when they may be one.

    A crash tears only the last records written, so nothing whole follows a torn record. A
    whole record (length, CRC and payload intact) after the cut means the damage is in the
    middle: cutting there would drop every accepted command after it."""
    from matcher.journal import decode_record, unframe

    buf = journal.read_bytes()
    for at in range(valid + 1, min(len(buf), valid + 1 + _DAMAGE_SCAN_BYTES)):
        got = unframe(buf, at)
        if got is None:
            continue
        try:
            seq = decode_record(got[0]).seq
        except (msgspec.DecodeError, ValueError, TypeError):
            continue  # bytes that pass the CRC by chance (an empty payload) but are no record
        return (f"journal {journal} is damaged at byte {valid}, but a whole "
                f"record (seq {seq}) follows at byte {at}: recovery would cut {len(buf) - valid} bytes of "
                f"accepted commands. Restore the file from a backup; to accept the loss, `truncate -s "
                f"{valid} {journal}`")
    return None


async def run_matcher(opts: MatcherOptions) -> None:
    """Recover, serve, snapshot and poll oracle prices until SIGTERM / SIGINT."""
    from matcher.commands import SetOraclePrices
    from matcher.engine import EngineConfig
    from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalError, JournalWriter, cut_tail, recover
    from matcher import background_snapshot
    from matcher.fill_log import FillLog
    from matcher.journal import write_snapshot
    from matcher.server import MatcherServer, ServerConfig

    opts.journal_dir.mkdir(parents=True, exist_ok=True)
    journal = opts.journal_dir / "journal.bin"
    snapdir = opts.journal_dir / "snapshots"
    cfg = EngineConfig(max_unsettled_per_account=opts.max_unsettled_per_account,
                       max_unsettled_global=opts.max_unsettled_global,
                       max_open_orders_per_account=opts.max_open_orders,
                       max_nonce_words_per_owner=opts.max_nonce_words,
                       expiry_margin_s=opts.expiry_margin_s)
    t0 = time.monotonic()
    # the fills channel's record: recovery rebuilds the outputs of the commands after its end
    fills = FillLog(opts.journal_dir / "fills")
    try:
        rec = recover(journal, snapdir, cfg, truncate=False, outputs_after=fills.last_cmd_seq)
        if rec.truncated:
            why = journal_damage(journal, rec.journal_offset)
            if why:
                log.critical(why)
                raise SystemExit(f"matcher: {why}")
            log.warning("journal: cutting a torn tail of %d bytes after record %d", rec.truncated,
                        rec.engine.cmd_seq)
            cut_tail(journal, rec.journal_offset)  # the engine is the same: no second replay
    except JournalError as err:  # a damaged sealed segment, a gap, deleted history: one line
        log.critical("journal %s: %s", journal, err)
        raise SystemExit(f"matcher: journal {journal}: {err}") from err
    eng = rec.engine
    log.info("recovered engine: %d records replayed in %.2fs, cmd_seq %d, next seq %d, "
             "settled %d, chain cursor %s", rec.replayed, time.monotonic() - t0, eng.cmd_seq,
             eng.ledger.next_seq, eng.ledger.settled_seq, eng.chain_cursor)
    writer = JournalWriter(journal, fsync=FSYNC_BY_SHELL,
                           segment_bytes=opts.journal_segment_mb * 1024 * 1024)
    jengine = JournaledEngine(eng, writer)  # snapshots: the background task below
    fills.resume_after(rec)
    dep = opts.deployment
    server = MatcherServer(jengine, ServerConfig(
        host=opts.host, port=opts.port, chain_id=dep.chain_id,
        verifying_contract=dep.clearinghouse.lower(), stream_token=opts.stream_token,
        operator_token=opts.operator_token, gc_sweep_s=opts.gc_sweep_s,
        busy_poll_us=opts.busy_poll_us), fill_log=fills, unpublished=rec.unpublished)
    log.info("fill log: %d frames kept, %d commands republished",
             server.hub.fill_history.frames(), len(rec.unpublished))
    instrument_matcher(server)  # before start(): the engine task binds _run when it starts
    stop = stop_event()
    await server.start()
    print(f"matcher listening on {server.url}", flush=True)
    mark_ready("matcher")
    poller = OraclePoller(connect_rpc(opts.rpc_url), dep.oracle)

    async def poll_prices() -> None:
        while True:
            try:
                got = await poller.read()
                if got is not None:
                    res = await server.submit(SetOraclePrices(
                        server.next_req_id(), got.assets, got.markets, server.now(),
                        got.gone_assets, got.gone_markets))
                    if res.ack.ok:
                        poller.applied(got)
                    else:
                        log.error("oracle prices refused: %s", res.ack.message)
            except Exception as exc:  # noqa: BLE001 - a flaky RPC must not stop the matcher
                log.warning("oracle poll failed: %s", exc)
            await asyncio.sleep(opts.oracle_poll_s)

    child: background_snapshot.Child | None = None

    async def snapshots() -> None:
        # every snapshot_every journaled commands, and at least every snapshot_interval_s when
        # anything changed; written by a forked child so no order waits for it
        nonlocal child
        last, last_at = eng.cmd_seq, time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            if child is not None:
                done = background_snapshot.poll(child)
                if done is None:
                    continue
                if done:
                    last = child.cmd_seq
                    background_snapshot.prune(snapdir, opts.snapshots_kept, journal)
                else:
                    log.error("background snapshot at cmd_seq %d failed", child.cmd_seq)
                child = None
            due = (eng.cmd_seq - last >= opts.snapshot_every
                   or time.monotonic() - last_at >= opts.snapshot_interval_s)
            if eng.cmd_seq != last and due:
                # the engine runs on this loop, so state and journal offset agree at the fork,
                # and every command up to here was published: the fill log says so first
                fills.mark(eng.cmd_seq)
                child = background_snapshot.start(snapdir, eng, writer, (fills.fileno(),))
                last_at = time.monotonic()

    tasks = [asyncio.create_task(poll_prices()), asyncio.create_task(snapshots())]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()
        if child is not None:
            background_snapshot.wait(child)
        fills.mark(eng.cmd_seq)
        fills.close()
        write_snapshot(snapdir, eng, writer.offset, writer.segment)
        writer.close()
        log.info("matcher stopped at cmd_seq %d", eng.cmd_seq)


# ============================================================================ relayer


@dataclass
class RelayerOptions:
    """Configuration of ``crossbook relayer``."""

    deployment: Deployment
    rpc_url: str
    matcher_url: str
    operator_key: str
    stream_token: str | None = None
    max_items: int = BatchLimits.max_items
    max_age_s: float = BatchLimits.max_age_s
    max_gas: int = BatchLimits.max_gas
    max_in_flight: int = RelayerConfig.max_in_flight


async def run_relayer(opts: RelayerOptions) -> int:
    """Settle the matcher's stream until SIGTERM / SIGINT; returns the exit status (1 when a
    batch keeps failing for a reason other than ordering: never retried blindly forever)."""
    source = WsItemSource(opts.matcher_url, opts.stream_token)
    cfg = RelayerConfig(limits=BatchLimits(max_items=opts.max_items, max_age_s=opts.max_age_s,
                                           max_gas=opts.max_gas),
                        max_in_flight=opts.max_in_flight)
    relayer = Relayer(connect_rpc(opts.rpc_url), opts.deployment.clearinghouse,
                      opts.operator_key, source, cfg)
    instrument_relayer(relayer)
    stop = stop_event()
    mark_ready("relayer")

    async def loop() -> int:
        while not stop.is_set():
            try:
                # run() reads nextSeq() and the pending nonce again on every pass; it returns
                # when the stream ended (items settled elsewhere): resync from the chain
                await relayer.run()
            except RelayerError as exc:
                log.error("relayer stopped: %s", exc)
                return 1
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("chain unavailable (%s); retrying", exc)
            await asyncio.sleep(0.2)
        return 0

    task = asyncio.create_task(loop())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        relayer.stop()
        source.close()
        try:
            await asyncio.wait_for(task, 30)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()
        return 0
    stopper.cancel()
    return task.result()


# ============================================================================ watcher


@dataclass
class WatcherOptions:
    """Configuration of ``crossbook watcher``."""

    deployment: Deployment
    rpc_url: str
    matcher_url: str
    operator_token: str
    confirmations: int = 1
    poll_interval_s: float = 0.25
    state_path: Path | None = None


class MatcherLink:
    """One operator websocket connection: request/response by id, frames in between ignored."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send ``req`` (an ``id`` is added) and return its response frame."""
        self._ids += 1
        rid = self._ids
        await self.ws.send(json.dumps({**req, "id": rid}))
        while True:
            msg = json.loads(await self.ws.recv())
            # id None: the server could not even read the request (too large, not JSON)
            if msg.get("type") == "response" and msg.get("id") in (rid, None):
                return dict(msg)


_enc = msgspec.json.Encoder()
# answers meaning "the engine did not take it, try the same event again" (bounded, see forward)
_TRANSIENT = frozenset(("OVERLOADED", "RATE_LIMITED", "INTERNAL"))
# engine refusals of a chain event: the refusal itself moved the engine's cursor
_ENGINE_CODES = frozenset(c.name for c in Code) - {"BAD_REQUEST", "NOT_AUTHORISED"}
_MAX_RETRIES = 600


class ForwardError(Exception):
    """An event could not be handed to the engine: the watcher stops rather than skip it
    (skipping would let the next event move the cursor past it)."""


async def forward(link: MatcherLink, token: str, ev: WatcherOutput,
                  cursor: tuple[int, int]) -> None:
    """Hand one watcher output to the matcher; returns once the engine has applied it.

    Strictly one at a time: the engine's cursor skips anything at or before the last applied
    event, so an event must never overtake an earlier one that could still fail."""
    if isinstance(ev, ChainReorg):
        # confirmations >= the reorg depth keep reorged logs away from the engine; a deeper
        # reorg means already-applied events may be void (a deposit the chain dropped would
        # margin orders whose fills then bust): trading halts until an operator has looked
        reason = (f"chain reorg below block {ev.common_block} deeper than the confirmation depth: "
                  "check with `crossbook reconcile`, then `crossbook halt --resume`")
        log.critical("%s; halting trading (the matcher may hold events the chain dropped)", reason)
        resp = await link.call({"op": "halt", "token": token, "reason": reason})
        if not resp.get("ok"):
            log.error("the matcher did not halt: %s %s", resp.get("code"), resp.get("message"))
        return
    if (ev.block_number, ev.log_index) <= cursor:
        return  # the engine has it (saves a round trip; the engine would ignore it too)
    event = json.loads(_enc.encode(ev))
    for _ in range(_MAX_RETRIES):
        resp = await link.call({"op": "chain", "token": token, "event": event})
        code = resp.get("code")
        if resp.get("ok"):
            return
        if code in _TRANSIENT:
            await asyncio.sleep(0.1)  # the same event again, never the next one
            continue
        if code == "NOT_AUTHORISED":
            raise PermissionError("the matcher refused the operator token")
        if code in _ENGINE_CODES:
            # the engine refused the event (e.g. a forced withdrawal it cannot execute early);
            # the refusal moved its cursor, so it is not a reason to stall the stream
            log.warning("matcher refused %s at %d/%d: %s %s", type(ev).__name__,
                        ev.block_number, ev.log_index, code, resp.get("message"))
            return
        raise ForwardError(f"{type(ev).__name__} at {ev.block_number}/{ev.log_index} did not "
                           f"reach the engine: {code} {resp.get('message')}")
    raise ForwardError(f"{type(ev).__name__} at {ev.block_number}/{ev.log_index}: the matcher "
                       f"kept answering {code} for {_MAX_RETRIES} attempts")


async def _watch_session(opts: WatcherOptions, w3: AsyncWeb3, stop: asyncio.Event) -> None:
    async with connect(opts.matcher_url, max_size=None, compression=None,
                       open_timeout=5) as ws:
        await ws.recv()  # hello
        link = MatcherLink(ws)
        cur = await link.call({"op": "chain_cursor"})
        if not cur.get("ok"):
            raise RuntimeError(f"chain_cursor refused: {cur}")
        cursor = (int(cur["result"]["block"]), int(cur["result"]["log_index"]))
        # resume at the cursor's own block: later logs of that block may still be missing
        start = max(opts.deployment.start_block, cursor[0])
        state = opts.state_path or Path(tempfile.gettempdir()) / f"crossbook-watcher-{os.getpid()}.json"
        # the matcher's cursor is the truth; the state file only serves reorg detection
        # within this session, so a stale one from an earlier run is discarded
        state.unlink(missing_ok=True)
        watcher = ChainWatcher(w3, opts.deployment.clearinghouse, state, start_block=start,
                               confirmations=opts.confirmations,
                               poll_interval_s=opts.poll_interval_s)
        log.info("watcher resuming at block %d (matcher cursor %s)", start, cursor)
        wm = watcher_metrics()
        wm.sessions.inc()
        mark_ready("watcher")
        while not stop.is_set():
            out, st = await watcher.poll()
            for ev in out:
                await forward(link, opts.operator_token, ev, cursor)
                wm.events.labels(kind=type(ev).__name__).inc()
            watcher.commit(st)
            if st is not None:
                wm.cursor_block.set(st.block_number)
            if not out:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), opts.poll_interval_s)


async def run_watcher(opts: WatcherOptions) -> int:
    """Follow the chain into the matcher until SIGTERM / SIGINT; reconnects (and resumes from
    the matcher's cursor) whenever the matcher or the chain goes away."""
    w3 = connect_rpc(opts.rpc_url)
    stop = stop_event()
    while not stop.is_set():
        try:
            await _watch_session(opts, w3, stop)
        except (PermissionError, ForwardError) as exc:
            log.error("watcher stopped: %s", exc)
            return 1
        except (OSError, asyncio.TimeoutError, websockets.ConnectionClosed,
                websockets.InvalidHandshake) as exc:
            log.warning("watcher session ended (%s); reconnecting", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return 0


__all__ = [
    "ForwardError", "MatcherLink", "MatcherOptions", "OraclePoller", "RelayerOptions", "WatcherOptions",
    "forward", "journal_damage", "run_matcher", "run_relayer", "run_watcher",
]
