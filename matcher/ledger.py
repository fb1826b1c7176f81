"""Shadow ledger: the chain-confirmed state of every sub-account plus the sequenced-but-unsettled
items applied on top of it (the *projected* state the risk checks use).

Both states move with the same code (:func:`apply_entry`, which calls
``crossbook.margin.apply_fill_side``), so the confirmed state equals what the clearinghouse
computed for the same items. Keeping both lets a ``BatchSettled`` with rejected items reverse
exactly those items: the affected projected accounts are rebuilt as confirmed + the remaining
unsettled items, in sequence order (brief invariants 3, 4 and 6).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator

import msgspec

from crossbook.fixedpoint import PPM, trunc_div
from crossbook.margin import Position, SubAccount, apply_fill_side, clamp_funding_rate
from crossbook.protocol_types import FillItem, ForcedItem, FundingItem, Item, ItemKind
from matcher.native import use_source_if_stale
from matcher.risk import div_notional
from matcher.structs import Acct, AcctRow, Entry, LedgerSnapshot, SettleResult


_FILL = int(ItemKind.FILL)
_WITHDRAW = int(ItemKind.WITHDRAW)
_TRANSFER = int(ItemKind.TRANSFER)
_FUNDING = int(ItemKind.FUNDING)
_FORCED = int(ItemKind.FORCED)


def funding_delta(rate_ppm: int, max_funding_ppm: int, price: int) -> int:
    """Change of the cumulative funding index for one funding item (docs/protocol.md §3)."""
    return trunc_div(clamp_funding_rate(rate_ppm, max_funding_ppm) * price, PPM)


def _apply_side(
    accounts: dict[Acct, SubAccount], e: Entry, acct: Acct, funding_index: int
) -> None:
    """Apply one entry's effect on one account (``acct`` must be ``e.a`` or ``e.b``)."""
    st = accounts.get(acct)
    if st is None:
        st = accounts[acct] = SubAccount()
    kind = e.kind
    if kind == _FILL:
        cash = div_notional(e.qty * e.price)  # fill_cash inlined
        is_taker = acct == e.a
        is_buy = e.a_buy if is_taker else not e.a_buy
        delta = e.qty if is_buy else -e.qty
        apply_fill_side(st, e.market, delta, cash if is_buy else -cash,
                   e.fee_a if is_taker else e.fee_b, funding_index)
    elif kind == _TRANSFER and acct == e.b:
        _add_asset(st, e.asset, e.qty)
    else:  # withdrawal, forced withdrawal, transfer source
        _add_asset(st, e.asset, -e.qty)


def _add_asset(st: SubAccount, asset: int, amount: int) -> None:
    """Add ``amount`` (negative: remove) of ``asset`` (0: quote) to ``st``; zero collateral is
    dropped, like the contract clears an asset's bit when its balance reaches 0."""
    if asset == 0:
        st.quote += amount
    else:
        left = st.collateral.get(asset, 0) + amount
        if left:
            st.collateral[asset] = left
        else:
            st.collateral.pop(asset, None)


def apply_entry(accounts: dict[Acct, SubAccount], funding: dict[int, int], e: Entry) -> None:
    """Apply an entry to a state (``accounts`` + cumulative ``funding`` indices) in place."""
    if e.kind == _FUNDING:
        funding[e.market] = funding.get(e.market, 0) + e.delta
        return
    findex = funding.get(e.market, 0) if e.kind == _FILL else 0
    e.findex = findex
    for acct in e.accounts():
        _apply_side(accounts, e, acct, findex)


class Ledger:
    """Confirmed + projected sub-account states, the unsettled outbox and the sequence counter.

    ``next_seq`` is the next sequence number to hand out (starts at 1 like the contract);
    ``settled_seq`` the last one the chain has processed. Every unsettled entry stays in
    ``unsettled`` (the outbox) until its batch settles, so ``items_from`` can replay it.
    """

    def __init__(self) -> None:
        self.confirmed: dict[Acct, SubAccount] = {}
        self.projected: dict[Acct, SubAccount] = {}
        self.conf_funding: dict[int, int] = {}
        self.proj_funding: dict[int, int] = {}
        self.unsettled: dict[int, Entry] = {}
        self.next_seq = 1
        self.settled_seq = 0
        # unsettled items touching each sub-account (the per-account lag bound of invariant 6)
        self.pending: dict[Acct, int] = {}
        # market -> cumulative indices of FundingUpdated events whose BatchSettled has not
        # arrived yet, in chain order (see note_chain_funding)
        self.chain_funding: dict[int, list[int]] = {}

    # ---------------------------------------------------------------- queries

    # account keys arrive as Any: a tuple[str, int] parameter is unboxed by the compiled
    # build and boxed anew (a new tuple object, hashed and compared) for each dict operation

    def account(self, acct: Any) -> SubAccount:
        """The projected state of a sub-account (an empty one if unknown; do not mutate)."""
        st = self.projected.get(acct)
        return st if st is not None else _EMPTY

    def position(self, acct: Any, market: int) -> int:
        """Projected position size of a sub-account in a market."""
        st = self.projected.get(acct)
        if st is None:
            return 0
        p = st.positions.get(market)
        return 0 if p is None else p.size

    def unsettled_count(self) -> int:
        """Number of sequenced items the chain has not processed yet."""
        return len(self.unsettled)

    def items_from(self, seq: int) -> list[tuple[int, Item]]:
        """Unsettled items with sequence number >= ``seq``, in order (relayer replay)."""
        if seq <= self.settled_seq:
            seq = self.settled_seq + 1
        return [(s, self.unsettled[s].item) for s in range(seq, self.next_seq)]

    # ---------------------------------------------------------------- changes

    def deposit(self, acct: Any, asset: int, amount: int) -> None:
        """A confirmed deposit moves both states."""
        for accounts in (self.confirmed, self.projected):
            st = accounts.get(acct)
            if st is None:
                st = accounts[acct] = SubAccount()
            _add_asset(st, asset, amount)

    def confirmed_for_update(self, acct: Acct) -> SubAccount:
        """The confirmed state of ``acct`` to change in place (created empty if unknown).

        For chain events that bypass the sequencer (liquidations, owner-executed escape-hatch
        withdrawals): the caller changes the confirmed state exactly as the contract did, then
        calls :meth:`reproject` so projected = confirmed + unsettled items again."""
        st = self.confirmed.get(acct)
        if st is None:
            st = self.confirmed[acct] = SubAccount()
        return st

    def reproject(self, accounts: set[Acct]) -> None:
        """Rebuild the projected state of ``accounts`` from their confirmed state and the
        unsettled items (after :meth:`confirmed_for_update` changes)."""
        self.rebuild(accounts)

    def note_chain_funding(self, market: int, cumulative_index: int) -> None:
        """A ``FundingUpdated`` event: the contract applied the next FUNDING item of ``market``
        and its index is now ``cumulative_index``.

        The engine sequenced that item with a delta computed at its own oracle price; the
        contract used the price it read when the batch landed. The event comes before the
        ``BatchSettled`` of its transaction, so the index is held here and :meth:`settle` gives
        the market's applied FUNDING entries of that batch, in sequence order, the chain's
        deltas (rejected items emit no event, so the pairing skips them)."""
        self.chain_funding.setdefault(market, []).append(cumulative_index)

    def _take_chain_funding(self, applied: list[Entry]) -> bool:
        """Give the batch's applied FUNDING entries (before they reach the confirmed state)
        the deltas the chain reported; returns True when any confirmed index moved away from
        what the projected state assumed (the caller then rebuilds it)."""
        queued = self.chain_funding
        if not queued:
            return False
        changed = False
        running = dict(self.conf_funding)
        for e in applied:
            q = queued.get(e.market)
            if not q:
                running[e.market] = running.get(e.market, 0) + e.delta
                continue
            idx = q.pop(0)
            delta = idx - running.get(e.market, 0)
            if delta != e.delta:
                e.delta = delta
                changed = True
            running[e.market] = idx
        for m, q in queued.items():
            if q:
                # an index with no FUNDING entry of ours in the batch (funding posted outside
                # the matcher): the chain's value is the truth for the confirmed state
                self.conf_funding[m] = q[-1] - sum(e.delta for e in applied if e.market == m)
                changed = True
        queued.clear()
        return changed

    def sequence(self, e: Entry) -> int:
        """Give ``e`` the next sequence number, apply it to the projected state, keep it in the
        outbox. Returns the sequence number."""
        seq = e.seq = self.next_seq
        self.next_seq = seq + 1
        apply_entry(self.projected, self.proj_funding, e)
        self.unsettled[seq] = e
        pending = self.pending
        for acct in e.accounts():
            pending[acct] = pending.get(acct, 0) + 1
        return seq

    def settle(self, first_seq: int, count: int, rejected: Iterable[tuple[int, int]]) -> SettleResult:
        """Items ``first_seq..first_seq+count-1`` were processed on-chain. The caller has checked
        ``first_seq == settled_seq + 1`` and ``first_seq + count <= next_seq``. Applied items move
        into the confirmed state; rejected ones are dropped and the projected state of every
        account they touched is rebuilt without them."""
        rej = dict(rejected)
        out: list[tuple[Entry, int]] = []
        pending = self.pending
        funding_moved = False
        if self.chain_funding:
            funding_moved = self._take_chain_funding(
                [self.unsettled[s] for s in range(first_seq, first_seq + count)
                 if self.unsettled[s].kind == _FUNDING and s not in rej])
        for seq in range(first_seq, first_seq + count):
            e = self.unsettled.pop(seq)
            for acct in e.accounts():
                n = pending[acct] - 1
                if n:
                    pending[acct] = n
                else:
                    del pending[acct]
            reason = rej.get(seq)
            if reason is None:
                apply_entry(self.confirmed, self.conf_funding, e)
            else:
                out.append((e, reason))
        self.settled_seq = first_seq + count - 1
        if funding_moved:
            # every projected account with a position in the market (and the projected index)
            # assumed the engine's delta: rebuild all of it on the chain's index
            self.rebuild(None)
        elif out:
            full = any(e.kind == _FUNDING for e, _ in out)
            touched = {a for e, _ in out for a in e.accounts()}
            self.rebuild(None if full else touched)
        return SettleResult(out)

    def rebuild(self, accounts: set[Acct] | None) -> None:
        """Recompute projected = confirmed + unsettled entries, for ``accounts`` (None: all,
        including the projected funding indices)."""
        funding = dict(self.conf_funding)
        if accounts is None:
            proj = {a: st.copy() for a, st in self.confirmed.items()}
            for e in self.unsettled.values():
                apply_entry(proj, funding, e)
            self.projected = proj
            self.proj_funding = funding
            return
        proj = self.projected
        for a in accounts:
            st = self.confirmed.get(a)
            if st is None:
                proj.pop(a, None)
            else:
                proj[a] = st.copy()
        for e in self.unsettled.values():
            if e.kind == _FUNDING:
                funding[e.market] = funding.get(e.market, 0) + e.delta
                continue
            findex = funding.get(e.market, 0) if e.kind == _FILL else 0
            for a in e.accounts():
                if a in accounts:
                    e.findex = findex
                    _apply_side(proj, e, a, findex)

    # ---------------------------------------------------------------- snapshot / hash

    def dump(self) -> LedgerSnapshot:
        """A serializable copy of the whole ledger."""
        return LedgerSnapshot(
            confirmed=[_dump_acct(a, st) for a, st in self.confirmed.items()],
            projected=[_dump_acct(a, st) for a, st in self.projected.items()],
            conf_funding=dict(self.conf_funding),
            proj_funding=dict(self.proj_funding),
            unsettled=list(self.unsettled.values()),
            next_seq=self.next_seq,
            settled_seq=self.settled_seq,
            chain_funding={m: list(q) for m, q in self.chain_funding.items() if q},
        )

    @classmethod
    def load(cls, snap: LedgerSnapshot) -> Ledger:
        """Rebuild a ledger from :meth:`dump` output."""
        led = cls()
        led.confirmed = dict(_load_acct(r) for r in snap.confirmed)
        led.projected = dict(_load_acct(r) for r in snap.projected)
        led.conf_funding = dict(snap.conf_funding)
        led.proj_funding = dict(snap.proj_funding)
        for e in snap.unsettled:
            led.unsettled[e.seq] = e
            for a in e.accounts():
                led.pending[a] = led.pending.get(a, 0) + 1
        led.next_seq = snap.next_seq
        led.settled_seq = snap.settled_seq
        led.chain_funding = {m: list(q) for m, q in snap.chain_funding.items()}
        return led

    def hash_into(self, h: "hashlib.blake2b") -> None:
        """Feed a canonical form of the ledger into ``h`` (sorted, so dict order is irrelevant)."""
        h.update(repr((self.next_seq, self.settled_seq,
                       sorted(self.conf_funding.items()), sorted(self.proj_funding.items()))).encode())
        for accounts in (self.confirmed, self.projected):
            for a in sorted(accounts):
                h.update(repr(_canon_acct(a, accounts[a])).encode())
            h.update(b"|")
        enc = msgspec.msgpack.encode
        for e in self.unsettled.values():
            h.update(enc(e))
        if any(self.chain_funding.values()):  # only then: hashes of older states stay the same
            h.update(repr(sorted((m, q) for m, q in self.chain_funding.items() if q)).encode())


_EMPTY = SubAccount()

def _dump_acct(a: Acct, st: SubAccount) -> AcctRow:
    return (a[0], a[1], st.quote, dict(st.collateral),
            {m: (p.size, p.open_notional, p.funding_snapshot) for m, p in st.positions.items()})


def _load_acct(r: AcctRow) -> tuple[Acct, SubAccount]:
    owner, sub, quote, coll, pos = r
    return (owner, sub), SubAccount(quote, dict(coll),
                                    {m: Position(*p) for m, p in pos.items()})


def _canon_acct(a: Acct, st: SubAccount) -> tuple[object, ...]:
    # zero-size positions and zero collateral are equivalent to absent ones for the chain
    return (a, st.quote, sorted((k, v) for k, v in st.collateral.items() if v),
            sorted((m, p.size, p.open_notional, p.funding_snapshot)
                   for m, p in st.positions.items() if p.size))


def iter_fills(entries: Iterable[Entry]) -> Iterator[FillItem]:
    """The FillItems among entries (a test helper)."""
    for e in entries:
        if isinstance(e.item, FillItem):
            yield e.item


__all__ = [
    "Acct", "Entry", "Ledger", "LedgerSnapshot", "SettleResult", "apply_entry", "funding_delta",
    "iter_fills", "FundingItem", "ForcedItem", "add_asset",
]

add_asset = _add_asset


# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
