"""msgspec value types of the engine and its ledger: ledger entries, settle results and
snapshots.

They live apart from :mod:`matcher.engine` and :mod:`matcher.ledger` because those modules are
compiled with mypyc (``make build``) and msgspec reads a Struct's annotations at run time, which
needs an interpreted module. Both modules re-export their types, so either import path works.
"""

from __future__ import annotations

import msgspec

from crossbook.protocol_types import Item
from crossbook.protocol_types import Order as SignedOrder
from matcher.commands import ChainForcedWithdrawalRequested

Acct = tuple[str, int]


class Entry(msgspec.Struct, array_like=True, gc=False):
    """One sequenced item and its effect on the ledger.

    FILL: ``a`` taker, ``b`` maker, ``qty``/``price`` the fill, ``a_buy`` the taker's side,
    ``fee_a``/``fee_b`` the fees in quote atoms, ``findex`` the funding index the projected
    state used (refreshed on a rebuild). WITHDRAW/FORCED: ``a`` the account, ``asset``,
    ``qty`` the amount. TRANSFER: ``a`` source, ``b`` destination. FUNDING: ``market`` and
    ``delta`` (the change of the cumulative index).
    """

    seq: int
    kind: int
    item: Item
    a: Acct | None = None
    b: Acct | None = None
    market: int = 0
    asset: int = 0
    qty: int = 0
    price: int = 0
    a_buy: bool = False
    fee_a: int = 0
    fee_b: int = 0
    delta: int = 0
    findex: int = 0

    def accounts(self) -> tuple[Acct, ...]:
        """The sub-accounts this entry changes."""
        if self.a is None:
            return ()
        if self.b is None:
            return (self.a,)
        return (self.a, self.b)


class SettleResult(msgspec.Struct):
    """Outcome of :meth:`Ledger.settle`: rejected entries with their on-chain reasons."""

    rejected: list[tuple[Entry, int]]


AcctRow = tuple[str, int, int, dict[int, int], dict[int, tuple[int, int, int]]]


class LedgerSnapshot(msgspec.Struct, array_like=True):
    """Serialized ledger (see :meth:`Ledger.dump`)."""

    confirmed: list[AcctRow]
    projected: list[AcctRow]
    conf_funding: dict[int, int]
    proj_funding: dict[int, int]
    unsettled: list[Entry]
    next_seq: int
    settled_seq: int
    # additive, defaulted: snapshots written before FundingUpdated reached the engine decode
    chain_funding: dict[int, list[int]] = {}


class RecRow(msgspec.Struct, array_like=True):
    oid: int
    market: int
    owner: str
    sub: int
    signed: SignedOrder
    sig: bytes
    filled: int
    remaining: int
    cid: int | None
    tif: int
    stp: int
    expiry: int


class EngineSnapshot(msgspec.Struct, array_like=True):
    """Everything :meth:`Engine.restore` needs; written by the journal's snapshots."""

    cmd_seq: int
    next_oid: int
    books: list[tuple[int, int, int, list[int]]]  # market, last_oid, fill_seq, oids by priority
    orders: list[RecRow]
    ledger: LedgerSnapshot
    nonces: list[tuple[str, int]]  # used nonces of unknown expiry (old snapshots; see nonce_words)
    digests: list[bytes]  # used digests of unknown expiry (see digest_buckets)
    forced: list[int]
    agents: list[tuple[str, str]]
    asset_prices: dict[int, int]
    market_prices: dict[int, int]
    # additive, defaulted: snapshots written before the chain cursor existed still decode
    chain_cursor: tuple[int, int] = (0, 0)
    # additive, defaulted: the mirrored section 9.1 parameters (contract defaults until an event)
    liquidation_params: tuple[int, int, int, int] = (20_000, 500_000, 100_000, 500_000)
    # additive, defaulted: the engine clock (high-water mark of command ``now``s) and the
    # pending forgets of nonces (bucket, owners, nonces) and of withdrawal/transfer digests
    # (bucket, digests), as Engine.Forgets holds them. ``nonces`` and ``digests`` above then
    # only carry keys of unknown expiry: everything a snapshot written before the buckets
    # remembered, which stays remembered
    clock: int = 0
    nonce_buckets: list[tuple[int, list[str], list[int]]] = []
    digest_buckets: list[tuple[int, list[bytes]]] = []
    # additive, defaulted: (order id, agent) of live orders an agent key signed (a revocation
    # cancels them); snapshots written before it restore none
    agent_orders: list[tuple[int, str]] = []
    # additive, defaulted: forced-withdrawal requests refused for their balance or health, which
    # a deposit into their account tries again
    forced_waiting: list[ChainForcedWithdrawalRequested] = []
    # additive, defaulted: the used nonces as words of 32 (Engine.nonces): (owner, nonce >> 5,
    # bits, bucket id of the word's latest expiry or -1: never forgotten), and the forget
    # buckets' entries (bucket, owners, words). A snapshot with them leaves ``nonces`` and
    # ``nonce_buckets`` empty; one written before them restores those into words
    nonce_words: list[tuple[str, int, int, int]] = []
    nonce_word_buckets: list[tuple[int, list[str], list[int]]] = []
    # additive, defaulted: why trading is halted (SetHalt), None while trading
    halt_reason: str | None = None


__all__ = ["Acct", "AcctRow", "Entry", "EngineSnapshot", "LedgerSnapshot", "RecRow", "SettleResult"]
