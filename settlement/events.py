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
    """``ForcedWithdrawalExecuted(requestId)``, with the ``Withdrawn`` log the contract emits just
    before it in the same transaction folded in (``owner`` .. ``seq``; the request id event alone
    does not say whose balance moved). ``seq`` is 0 when the owner executed the request on-chain
    after the escape delay, the FORCED item's sequence number when a batch executed it. The
    folded fields are empty (``owner == ""``) if no such ``Withdrawn`` log was seen."""

    request_id: int
    owner: str = ""
    subaccount: int = 0
    asset: int = 0
    amount: int = 0
    seq: int = 0


class ChainFundingUpdated(ChainEventBase, frozen=True, kw_only=True, tag="funding_updated"):
    """``FundingUpdated(market, ratePpm, cumulativeIndex)``; the rate is the clamped one."""

    market: int
    rate_ppm: int
    cumulative_index: int


class ChainLiquidated(ChainEventBase, frozen=True, kw_only=True, tag="liquidated"):
    """``Liquidated`` (docs/protocol.md section 9.4); ``size_delta`` is the target's size change."""

    owner: str
    subaccount: int
    market: int
    liquidator: str
    liquidator_subaccount: int
    size_delta: int
    price: int
    penalty: int
    insurance_share: int


class ChainCollateralLiquidated(ChainEventBase, frozen=True, kw_only=True, tag="collateral_liquidated"):
    """``CollateralLiquidated`` (section 9.5): ``amount`` of ``asset`` bought for ``paid`` quote."""

    owner: str
    subaccount: int
    asset: int
    liquidator: str
    liquidator_subaccount: int
    amount: int
    price: int
    paid: int


class ChainBadDebtSettled(ChainEventBase, frozen=True, kw_only=True, tag="bad_debt_settled"):
    """``BadDebtSettled`` (section 9.6)."""

    owner: str
    subaccount: int
    insurance_paid: int
    fee_pool_paid: int
    unbacked: int


class ChainDeleveraged(ChainEventBase, frozen=True, kw_only=True, tag="deleveraged"):
    """``Deleveraged`` (section 9.7); ``size_delta`` is the target's size change."""

    owner: str
    subaccount: int
    market: int
    counterparty: str
    counterparty_subaccount: int
    size_delta: int
    price: int


class ChainLiquidationParamsSet(ChainEventBase, frozen=True, kw_only=True, tag="liquidation_params"):
    """``LiquidationParamsSet`` (section 9.1), all ppm."""

    penalty_ppm: int
    insurance_share_ppm: int
    buffer_ppm: int
    critical_ppm: int


class ChainReorg(msgspec.Struct, frozen=True, kw_only=True, tag="reorg"):
    """The chain dropped blocks the watcher had already reported.

    Every event previously emitted from a block ``> common_block`` is void; the watcher re-emits
    whatever the new chain holds from ``common_block + 1`` on.
    """

    common_block: int
    common_hash: str


ChainEvent = Union[
    ChainDeposit, ChainBatchSettled, ChainWithdrawn, ChainAgentSet, ChainForcedWithdrawalRequested,
    ChainForcedWithdrawalExecuted, ChainFundingUpdated, ChainLiquidated, ChainCollateralLiquidated,
    ChainBadDebtSettled, ChainDeleveraged, ChainLiquidationParamsSet,
]
WatcherOutput = Union[ChainEvent, ChainReorg]
