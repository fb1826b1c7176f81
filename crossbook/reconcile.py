"""Reconciliation: did the chain settle exactly what the matcher sequenced?

Two sources of truth are compared: the matcher's journal (every item it sequenced, and every
bust it applied) and the Clearinghouse contract (its ``BatchSettled`` / ``ItemRejected`` events,
the calldata of each settling transaction, ``nextSeq()`` and the sub-accounts' views).

The comparison core (:func:`reconcile` and the ``check_*`` functions) is sans-I/O: it takes
plain values (:class:`JournalView`, :class:`ChainView`, :class:`LedgerView`) and returns a
:class:`Report` whose findings each carry a machine-readable ``kind``. The loaders
(:func:`replay_journal`, :func:`recovered_engine`, :func:`read_chain`) do the reading; they
never write to the journal directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import msgspec
from web3 import Web3

from crossbook.batch_codec import decode_batch, encode_item
from crossbook.chain.clearinghouse import ClearinghouseClient
from crossbook.chain.deploy import Deployment
from crossbook.margin import SubAccount
from crossbook.protocol_types import Item, RejectReason
from matcher.commands import Bust, ItemRejected, Sequenced
from matcher.engine import Engine, EngineConfig
from matcher.chain_commands import command_for
from matcher.journal import (JournalError, first_seq, iter_journal, read_snapshot, recover,
                             sealed_segments, snapshot_files)
from settlement.events import ChainBatchSettled, ChainEvent
from settlement.watcher import EventDecoder

FAILURE = "failure"
INFO = "info"

# finding kinds
GAP = "gap"  # settled ranges skip sequence numbers
OVERLAP = "overlap"  # a range starts at or before a sequence number already settled
NEXT_SEQ_MISMATCH = "next_seq_mismatch"  # the ranges do not end at the contract's nextSeq - 1
ITEM_MISMATCH = "item_mismatch"  # on-chain item bytes differ from the journaled item
SETTLED_NOT_JOURNALED = "settled_not_journaled"  # on-chain item beyond what the journal sequenced
BATCH_UNDECODABLE = "batch_undecodable"  # a settling transaction's calldata is not settle(batch)
REJECTED_WITHOUT_BUST = "rejected_without_bust"  # ItemRejected the journal never busted
BUST_MISMATCH = "bust_mismatch"  # the journal busted the item with another reason
BUST_WITHOUT_REJECTION = "bust_without_rejection"  # the journal busted an item the chain accepted
LEDGER_MISMATCH = "ledger_mismatch"  # a confirmed sub-account differs from the chain's
LEDGER_SKIPPED = "ledger_skipped"  # info: the matcher has not seen the chain up to the block read

# large enough that a replay never refuses what the live matcher accepted under its own limits
_HUGE = 10**12
REPLAY_CONFIG = EngineConfig(max_unsettled_per_account=_HUGE, max_unsettled_global=_HUGE,
                             max_open_orders_per_account=_HUGE, max_nonce_words_per_owner=_HUGE)
LOG_RANGE = 5_000  # blocks per eth_getLogs request
_SETTLE_SELECTOR = bytes(Web3.keccak(text="settle(bytes)")[:4])

Acct = tuple[str, int]
Cursor = tuple[int, int]


# ==================================================================================== inputs

class JournalView(msgspec.Struct, kw_only=True):
    """What the retained journal proves. ``items``: seq -> the encoded item, for every seq in
    [first_seq, next_seq); ``busts``: item seq -> reject reason of each bust / item rejection
    the replayed commands applied; ``cursor_from`` / ``cursor``: the chain cursor (block,
    log index) where the replay started and ended (rejections applied at or before
    ``cursor_from`` are not in the replayed part)."""

    first_seq: int
    next_seq: int
    items: dict[int, bytes]
    busts: dict[int, int] = {}
    cursor_from: Cursor = (0, 0)
    cursor: Cursor = (0, 0)
    from_snapshot: int = 0  # command seq of the snapshot the replay started from (0: record 1)


class SettledBatch(msgspec.Struct, kw_only=True):
    """One ``BatchSettled`` with its rejections and the encoded items of its calldata
    (``items`` None: the calldata could not be decoded as this batch)."""

    first_seq: int
    count: int
    rejected: list[tuple[int, int]] = []
    block: int = 0
    log_index: int = 0
    tx_hash: str = ""
    items: list[bytes] | None = None


class ChainView(msgspec.Struct, kw_only=True):
    """The chain read at ``block``: the settled batches in chain order, ``nextSeq()``, and the
    position of the last event the matcher consumes ((0, 0): none)."""

    block: int
    next_seq: int
    batches: list[SettledBatch]
    last_event: Cursor = (0, 0)


@dataclass
class LedgerView:
    """The matcher's confirmed sub-accounts and its chain cursor; ``chain``: the same
    sub-accounts read from the contract (empty when the ledger check is skipped)."""

    cursor: Cursor
    engine: dict[Acct, SubAccount]
    chain: dict[Acct, SubAccount] = field(default_factory=dict)


# ==================================================================================== output

class Finding(msgspec.Struct, kw_only=True):
    """One check that failed (``severity`` ``failure``) or could not run (``info``)."""

    kind: str
    severity: str = FAILURE
    message: str
    seq: int | None = None
    account: str | None = None
    expected: Any = None
    actual: Any = None


class Rejection(msgspec.Struct, kw_only=True):
    """An item the contract rejected; ``bust``: ``journaled`` (the journal holds the matching
    bust), ``missing``, ``mismatch``, ``not_seen`` (the matcher has not applied that batch
    yet) or ``before_journal`` (applied before the retained journal begins)."""

    seq: int
    reason: int
    reason_name: str
    bust: str


class Report(msgspec.Struct, kw_only=True):
    """Outcome of :func:`reconcile`; ``ok`` is False when any finding is a failure."""

    ok: bool
    chain_block: int
    chain_next_seq: int
    journal_first_seq: int
    journal_next_seq: int
    journal_from_snapshot: int
    matcher_cursor: Cursor
    batches: int
    settled: int  # items the contract processed (nextSeq - 1)
    checked: int  # on-chain items compared byte for byte with the journal
    not_in_journal: int  # settled items older than the retained journal
    pending: int  # journaled items the chain has not processed yet
    rejected: list[Rejection]
    accounts_compared: int
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        """The findings that make the report inconsistent."""
        return [f for f in self.findings if f.severity == FAILURE]


# ==================================================================================== checks

class SeqRange(Protocol):
    """Anything with a settled range (:class:`SettledBatch`, a ``ChainBatchSettled`` event)."""

    @property
    def first_seq(self) -> int: ...  # noqa: D102

    @property
    def count(self) -> int: ...  # noqa: D102


def check_tiling(batches: Sequence[SeqRange], next_seq: int) -> list[Finding]:
    """The settled ranges, in chain order, tile [1, next_seq - 1]: no gap, no overlap."""
    out: list[Finding] = []
    expect = 1
    for b in batches:
        if not b.count:
            continue
        last = b.first_seq + b.count - 1
        if b.first_seq > expect:
            out.append(Finding(kind=GAP, seq=expect, expected=expect, actual=b.first_seq,
                               message=f"seqs {expect}..{b.first_seq - 1} were never settled"))
        elif b.first_seq < expect:
            out.append(Finding(kind=OVERLAP, seq=b.first_seq, expected=expect, actual=b.first_seq,
                               message=f"batch {b.first_seq}..{last} settles seqs again "
                                       f"(settled up to {expect - 1} already)"))
        expect = max(expect, last + 1)
    if expect != next_seq:
        out.append(Finding(kind=NEXT_SEQ_MISMATCH, expected=expect, actual=next_seq,
                           message=f"settled ranges end at {expect - 1} but the contract's "
                                   f"nextSeq is {next_seq}"))
    return out


def check_items(journal: JournalView, batches: Sequence[SettledBatch]) -> tuple[list[Finding], int, int]:
    """Every on-chain item equals the journaled item with its seq, byte for byte, and none is
    beyond what the journal sequenced. Returns (findings, items checked, items older than the
    retained journal)."""
    out: list[Finding] = []
    checked = older = 0
    for b in batches:
        if not b.count:
            continue
        if b.items is None or len(b.items) != b.count:
            out.append(Finding(kind=BATCH_UNDECODABLE, seq=b.first_seq, actual=b.tx_hash,
                               message=f"batch {b.first_seq}+{b.count}: its transaction's calldata "
                                       "is not a settle() of that batch; its items are unverified"))
            continue
        for i, data in enumerate(b.items):
            seq = b.first_seq + i
            want = journal.items.get(seq)
            if seq < journal.first_seq:
                older += 1
            elif want is None:
                out.append(Finding(kind=SETTLED_NOT_JOURNALED, seq=seq, actual="0x" + data.hex(),
                                   message=f"seq {seq} was settled but the journal sequenced only "
                                           f"up to {journal.next_seq - 1}"))
            elif want != data:
                out.append(Finding(kind=ITEM_MISMATCH, seq=seq, expected="0x" + want.hex(),
                                   actual="0x" + data.hex(),
                                   message=f"seq {seq}: the settled item differs from the journaled one"))
            else:
                checked += 1
    return out, checked, older


def check_rejections(journal: JournalView, batches: Sequence[SettledBatch]) -> tuple[list[Finding], list[Rejection]]:
    """Every ItemRejected has the matching bust in the journal (when the matcher applied that
    batch within the retained journal), and every journaled bust was a rejection."""
    out: list[Finding] = []
    listed: list[Rejection] = []
    rejected: set[int] = set()
    for b in batches:
        pos = (b.block, b.log_index)
        for seq, reason in b.rejected:
            rejected.add(seq)
            got = journal.busts.get(seq)
            if pos <= journal.cursor_from:
                status = "before_journal"
            elif pos > journal.cursor:
                status = "not_seen"
            elif got is None:
                status = "missing"
                out.append(Finding(kind=REJECTED_WITHOUT_BUST, seq=seq, expected=reason,
                                   message=f"seq {seq} was rejected on-chain ({reason_name(reason)}) "
                                           "but the journal holds no bust of it"))
            elif got != reason:
                status = "mismatch"
                out.append(Finding(kind=BUST_MISMATCH, seq=seq, expected=reason, actual=got,
                                   message=f"seq {seq} was rejected on-chain ({reason_name(reason)}) "
                                           f"but busted in the journal as {reason_name(got)}"))
            else:
                status = "journaled"
            listed.append(Rejection(seq=seq, reason=reason, reason_name=reason_name(reason), bust=status))
    for seq, reason in sorted(journal.busts.items()):
        if seq not in rejected:
            out.append(Finding(kind=BUST_WITHOUT_REJECTION, seq=seq, actual=reason,
                               message=f"the journal busted seq {seq} ({reason_name(reason)}) but "
                                       "the chain did not reject it"))
    return out, listed


def canon(st: SubAccount) -> tuple[object, ...]:
    """Comparable form: zero collateral and flat positions are the same as absent ones."""
    return (st.quote, sorted((k, v) for k, v in st.collateral.items() if v),
            sorted((m, p.size, p.open_notional, p.funding_snapshot)
                   for m, p in st.positions.items() if p.size or p.open_notional))


def ledger_lag(cursor: Cursor, last_event: Cursor) -> int | None:
    """Blocks the matcher's confirmed state is behind the chain's last event it consumes
    (None: it has seen every one, so its confirmed state is the chain's at the block read)."""
    if last_event <= cursor:
        return None
    return last_event[0] - cursor[0]


def check_ledger(engine: Mapping[Acct, SubAccount], chain: Mapping[Acct, SubAccount]) -> list[Finding]:
    """For every sub-account of ``engine``: its (confirmed) state equals the chain's."""
    out: list[Finding] = []
    for acct in sorted(engine):
        want = canon(chain.get(acct, SubAccount()))
        got = canon(engine[acct])
        if got != want:
            out.append(Finding(kind=LEDGER_MISMATCH, account=f"{acct[0]}/{acct[1]}", expected=want,
                               actual=got, message=f"sub-account {acct[0]}/{acct[1]}: the matcher's "
                                                   "confirmed state differs from the chain's"))
    return out


def reason_name(reason: int) -> str:
    """The RejectReason name of a code (the number itself for a code newer than this package)."""
    try:
        return RejectReason(reason).name
    except ValueError:
        return str(reason)


def reconcile(journal: JournalView, chain: ChainView, ledger: LedgerView) -> Report:
    """Every check; the report lists what failed (and the ledger check if it was skipped)."""
    findings = check_tiling(chain.batches, chain.next_seq)
    item_findings, checked, older = check_items(journal, chain.batches)
    findings += item_findings
    rej_findings, rejected = check_rejections(journal, chain.batches)
    findings += rej_findings
    compared = 0
    lag = ledger_lag(ledger.cursor, chain.last_event)
    if lag is None:
        findings += check_ledger(ledger.engine, ledger.chain)
        compared = len(ledger.engine)
    else:
        findings.append(Finding(kind=LEDGER_SKIPPED, severity=INFO, expected=list(chain.last_event),
                                actual=list(ledger.cursor),
                                message=f"ledger check skipped: matcher behind chain by {lag} blocks"))
    return Report(
        ok=not any(f.severity == FAILURE for f in findings), chain_block=chain.block,
        chain_next_seq=chain.next_seq, journal_first_seq=journal.first_seq,
        journal_next_seq=journal.next_seq, journal_from_snapshot=journal.from_snapshot,
        matcher_cursor=ledger.cursor, batches=sum(1 for b in chain.batches if b.count),
        settled=chain.next_seq - 1, checked=checked, not_in_journal=older,
        pending=max(0, journal.next_seq - chain.next_seq), rejected=rejected,
        accounts_compared=compared, findings=findings)


# =================================================================================== loaders

@dataclass
class JournalReplay:
    """What :func:`replay_journal` found: the items (decoded) and the :class:`JournalView`."""

    items: list[tuple[int, Item]]
    view: JournalView


def _journal_files(journal_dir: Path) -> Path:
    """The active journal path; a clear error when the directory holds no journal at all."""
    path = journal_dir / "journal.bin"
    if not path.exists() and not sealed_segments(path):
        raise FileNotFoundError(f"no matcher journal in {journal_dir} (expected journal.bin)")
    return path


def _start_engine(path: Path, snapdir: Path, config: EngineConfig) -> tuple[Engine, int]:
    """Where the replay starts: a fresh engine when the retained journal still begins at
    record 1, else the oldest readable snapshot whose successor record the journal holds.
    Returns the engine and the snapshot's command seq (0: none)."""
    segs = sealed_segments(path)
    begins = segs[0][0] if segs else first_seq(path)
    if begins is None or begins == 1:
        return Engine(config), 0
    for seq, p in snapshot_files(snapdir):
        if seq + 1 < begins:
            continue  # the records right after it were pruned
        snap = read_snapshot(p)
        if snap is None:
            continue  # damaged: a later one may do
        return Engine.restore(snap.engine, config), snap.seq
    raise JournalError(f"the journal begins at record {begins} and no snapshot covers the records "
                       "before it")


def replay_journal(journal_dir: str | Path, config: EngineConfig = REPLAY_CONFIG) -> JournalReplay:
    """Every item the retained journal can prove: replay from record 1 if it is still there,
    else from the oldest kept snapshot (items before it are outside the retained journal).
    Reads only."""
    d = Path(journal_dir)
    path = _journal_files(d)
    eng, snap_seq = _start_engine(path, d / "snapshots", config)
    eng.replaying = True  # reproduce every journaled order without the pre-trade check
    first_item = eng.ledger.next_seq
    cursor_from = eng.chain_cursor
    items: list[tuple[int, Item]] = []
    busts: dict[int, int] = {}
    for rec in iter_journal(path):
        if rec.seq <= eng.cmd_seq:
            continue  # covered by the snapshot
        if rec.seq != eng.cmd_seq + 1:
            raise JournalError(f"journal gap: expected record {eng.cmd_seq + 1}, got {rec.seq}")
        res = eng.apply(rec.cmd)
        if not res.journal:
            raise JournalError(f"record {rec.seq} changed nothing on replay")
        for o in res.outputs:
            if isinstance(o, Sequenced):
                items.append((o.seq, o.item))
            elif isinstance(o, (Bust, ItemRejected)):
                busts[o.seq] = o.reason
    view = JournalView(first_seq=first_item, next_seq=eng.ledger.next_seq,
                       items={s: encode_item(it) for s, it in items}, busts=busts,
                       cursor_from=cursor_from, cursor=eng.chain_cursor, from_snapshot=snap_seq)
    return JournalReplay(items, view)


def recovered_engine(journal_dir: str | Path, config: EngineConfig = REPLAY_CONFIG) -> Engine:
    """The matcher's state as it would restart (newest snapshot + journal tail), without
    truncating a torn tail: reads only."""
    d = Path(journal_dir)
    return recover(_journal_files(d), d / "snapshots", config, truncate=False).engine


def ledger_accounts(engine: Engine) -> dict[Acct, SubAccount]:
    """The confirmed state of every sub-account the engine knows."""
    led = engine.ledger
    return {a: engine.confirmed_account(*a) for a in sorted(set(led.confirmed) | set(led.projected))}


def chain_events(w3: Web3, address: str, from_block: int, to_block: int,
                 step: int = LOG_RANGE) -> list[ChainEvent]:
    """The contract's decoded events in [from_block, to_block], fetched ``step`` blocks per
    ``eth_getLogs`` (a transaction's logs are in one block, so the decoder's folding of
    ItemRejected into BatchSettled never straddles two requests)."""
    dec = EventDecoder(address=address)
    out: list[ChainEvent] = []
    for lo in range(from_block, to_block + 1, step):
        logs: Any = w3.eth.get_logs({"address": Web3.to_checksum_address(address), "fromBlock": lo,
                                     "toBlock": min(to_block, lo + step - 1)})
        out += dec.decode_logs(logs)
    return out


def _calldata_items(w3: Web3, contract: str, ev: ChainBatchSettled) -> list[bytes] | None:
    """The encoded items of the settle() call that emitted ``ev``, or None when the
    transaction is not a direct settle() of that batch."""
    tx = w3.eth.get_transaction(ev.tx_hash)  # type: ignore[arg-type]
    data = bytes(tx["input"])
    if str(tx.get("to") or "").lower() != contract.lower() or data[:4] != _SETTLE_SELECTOR:
        return None
    try:
        batch = Web3().codec.decode(["bytes"], data[4:])[0]
        first, items = decode_batch(batch)
    except ValueError:  # MalformedBatch and the ABI decoder's errors
        return None
    if first != ev.first_seq or len(items) != ev.count:
        return None
    return [encode_item(it) for it in items]


def settled_batches(w3: Web3, contract: str, events: Iterable[ChainBatchSettled]) -> list[SettledBatch]:
    """Each BatchSettled with the items its transaction's calldata carried."""
    return [SettledBatch(first_seq=e.first_seq, count=e.count, rejected=[(int(s), int(r)) for s, r in e.rejected],
                         block=e.block_number, log_index=e.log_index, tx_hash=e.tx_hash,
                         items=_calldata_items(w3, contract, e) if e.count else [])
            for e in events]


def _consumed(ev: ChainEvent) -> bool:
    """Whether the matcher turns the event into a journaled command (moving its chain cursor)."""
    return command_for(ev, 0) is not None


@dataclass
class ChainRead:
    """:func:`read_chain`'s result: the view, and a client whose views read the same block."""

    view: ChainView
    client: ClearinghouseClient

    def accounts(self, accts: Iterable[Acct]) -> dict[Acct, SubAccount]:
        """The sub-accounts as the contract's views report them at the block read."""
        return {a: self.client.subaccount(*a) for a in accts}


def read_chain(w3: Web3, deployment: Deployment, block: int | None = None,
               step: int = LOG_RANGE) -> ChainRead:
    """The chain side at ``block`` (default: the head): every BatchSettled since the
    deployment's start block with its calldata's items, nextSeq(), and the last event the
    matcher consumes. The views of the returned client are pinned to that block."""
    head = w3.eth.block_number if block is None else block
    pinned = Web3(w3.provider)
    pinned.eth.default_block = head  # every view call of the client reads this block
    client = ClearinghouseClient(pinned, deployment)
    address = deployment.clearinghouse
    events = chain_events(w3, address, deployment.start_block, head, step)
    settled = [e for e in events if isinstance(e, ChainBatchSettled)]
    consumed = [(e.block_number, e.log_index) for e in events if _consumed(e)]
    view = ChainView(block=head, next_seq=client.next_seq(), batches=settled_batches(w3, address, settled),
                     last_event=max(consumed, default=(0, 0)))
    return ChainRead(view, client)


def reconcile_stack(journal_dir: str | Path, w3: Web3, deployment: Deployment) -> Report:
    """Read the journal (``journal_dir``) and the chain (``w3``) and compare them."""
    journal = replay_journal(journal_dir).view
    engine = recovered_engine(journal_dir)
    chain = read_chain(w3, deployment)
    ledger = LedgerView(engine.chain_cursor, ledger_accounts(engine))
    if ledger_lag(ledger.cursor, chain.view.last_event) is None:
        ledger.chain = chain.accounts(ledger.engine)
    return reconcile(journal, chain.view, ledger)


__all__ = [
    "BATCH_UNDECODABLE", "BUST_MISMATCH", "BUST_WITHOUT_REJECTION", "ChainRead", "ChainView",
    "FAILURE", "Finding", "GAP", "INFO", "ITEM_MISMATCH", "JournalReplay", "JournalView",
    "LEDGER_MISMATCH", "LEDGER_SKIPPED", "LedgerView", "NEXT_SEQ_MISMATCH", "OVERLAP",
    "REJECTED_WITHOUT_BUST", "REPLAY_CONFIG", "Rejection", "Report", "SETTLED_NOT_JOURNALED",
    "SettledBatch", "canon", "chain_events", "check_items", "check_ledger", "check_rejections",
    "check_tiling", "ledger_accounts", "ledger_lag", "read_chain", "reason_name", "reconcile",
    "reconcile_stack", "recovered_engine", "replay_journal", "settled_batches",
]
