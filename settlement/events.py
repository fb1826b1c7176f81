"""Typed chain events the watcher hands to the matcher (msgspec Structs, cheap to encode).

Every event carries where it came from (block number, block hash, log index, tx hash) so a
consumer can de-duplicate after a restart and drop what a :class:`ChainReorg` took back.
"""
from __future__ import annotations

from typing import Union

import msgspec


class ChainEventBase(msgspec.Struct, frozen=True, kw_only=True):
    """Position of the log on the chain."""

    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str


class ChainDeposit(ChainEventBase, frozen=True, kw_only=True, tag="deposit"):
    """``Deposit(owner, subaccount, asset, amount)``: collateral credited on-chain."""

    owner: str
    subaccount: int
    asset: int
    amount: int


class ChainBatchSettled(ChainEventBase, frozen=True, kw_only=True, tag="batch_settled"):
    """``BatchSettled`` plus the ``ItemRejected`` logs of the same transaction.

    ``rejected`` lists ``(seq, reason)`` pairs; a reason is an int (see
    :class:`crossbook.protocol_types.RejectReason`) so codes newer than this package still pass.
    """

    first_seq: int
    count: int
    rejected: list[tuple[int, int]]


class ChainWithdrawn(ChainEventBase, frozen=True, kw_only=True, tag="withdrawn"):
    """``Withdrawn``; ``seq`` is 0 for an escape-hatch withdrawal executed on-chain."""

    owner: str
    subaccount: int
    asset: int
    amount: int
    seq: int


class ChainAgentSet(ChainEventBase, frozen=True, kw_only=True, tag="agent_set"):
    """``AgentSet(owner, agent, approved)``."""

    owner: str
    agent: str
    approved: bool


class ChainForcedWithdrawalRequested(ChainEventBase, frozen=True, kw_only=True, tag="forced_requested"):
    """``ForcedWithdrawalRequested``: an owner used the escape hatch."""

    request_id: int
    owner: str
    subaccount: int
    asset: int
    amount: int
    executable_at: int


class ChainForcedWithdrawalExecuted(ChainEventBase, frozen=True, kw_only=True, tag="forced_executed"):
    """``ForcedWithdrawalExecuted(requestId)``."""

    request_id: int


class ChainFundingUpdated(ChainEventBase, frozen=True, kw_only=True, tag="funding_updated"):
    """``FundingUpdated(market, ratePpm, cumulativeIndex)``; the rate is the clamped one."""

    market: int
    rate_ppm: int
    cumulative_index: int


class ChainReorg(msgspec.Struct, frozen=True, kw_only=True, tag="reorg"):
    """The chain dropped blocks the watcher had already reported.

    Every event previously emitted from a block ``> common_block`` is void; the watcher re-emits
    whatever the new chain holds from ``common_block + 1`` on.
    """

    common_block: int
    common_hash: str


ChainEvent = Union[
    ChainDeposit, ChainBatchSettled, ChainWithdrawn, ChainAgentSet, ChainForcedWithdrawalRequested,
    ChainForcedWithdrawalExecuted, ChainFundingUpdated,
]
WatcherOutput = Union[ChainEvent, ChainReorg]
