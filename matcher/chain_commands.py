"""Which confirmed chain events the matcher journals, and as which engine command.

One rule, used by the server (the watcher's ``chain`` requests become these commands) and by
``crossbook reconcile`` (which must know which events move the matcher's chain cursor).
Events whose effect already reaches the engine through ``BatchSettled`` - sequenced
withdrawals, and forced withdrawals a FORCED item executed - map to no command; an
escape-hatch withdrawal the owner executed on-chain (seq 0) and the liquidation-path events
change the confirmed state directly. ``FundingUpdated`` hands the engine the chain's
cumulative index, which replaces the engine's own estimate when the batch settles.
"""
from __future__ import annotations

from matcher.commands import (
    AgentSet,
    ChainBadDebtSettled,
    ChainBatchSettled,
    ChainCollateralLiquidated,
    ChainDeleveraged,
    ChainDeposit,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    ChainFundingUpdated,
    ChainLiquidated,
    ChainLiquidationParamsSet,
    Command,
)
from settlement import events as chain_events


def command_for(ev: chain_events.ChainEvent, rid: int) -> Command | None:
    """The engine command (correlation id ``rid``) a confirmed chain event implies, or None
    when the matcher ignores the event."""
    if isinstance(ev, chain_events.ChainDeposit):
        return ChainDeposit(rid, ev.owner.lower(), ev.subaccount, ev.asset, ev.amount,
                            ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainBatchSettled):
        return ChainBatchSettled(rid, ev.first_seq, ev.count,
                                 [(int(s), int(r)) for s, r in ev.rejected],
                                 ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainAgentSet):
        return AgentSet(rid, ev.owner.lower(), ev.agent.lower(), ev.approved,
                        ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainForcedWithdrawalRequested):
        return ChainForcedWithdrawalRequested(rid, ev.request_id, ev.owner.lower(),
                                              ev.subaccount, ev.asset, ev.amount,
                                              ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainLiquidated):
        return ChainLiquidated(rid, ev.owner.lower(), ev.subaccount, ev.market,
                               ev.liquidator.lower(), ev.liquidator_subaccount, ev.size_delta,
                               ev.price, ev.penalty, ev.insurance_share, ev.block_number,
                               ev.log_index)
    if isinstance(ev, chain_events.ChainCollateralLiquidated):
        return ChainCollateralLiquidated(rid, ev.owner.lower(), ev.subaccount, ev.asset,
                                         ev.liquidator.lower(), ev.liquidator_subaccount,
                                         ev.amount, ev.price, ev.paid, ev.block_number,
                                         ev.log_index)
    if isinstance(ev, chain_events.ChainBadDebtSettled):
        return ChainBadDebtSettled(rid, ev.owner.lower(), ev.subaccount, ev.insurance_paid,
                                   ev.fee_pool_paid, ev.unbacked, ev.block_number,
                                   ev.log_index)
    if isinstance(ev, chain_events.ChainDeleveraged):
        return ChainDeleveraged(rid, ev.owner.lower(), ev.subaccount, ev.market,
                                ev.counterparty.lower(), ev.counterparty_subaccount,
                                ev.size_delta, ev.price, ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainFundingUpdated):
        return ChainFundingUpdated(rid, ev.market, ev.rate_ppm, ev.cumulative_index,
                                   ev.block_number, ev.log_index)
    if isinstance(ev, chain_events.ChainLiquidationParamsSet):
        return ChainLiquidationParamsSet(rid, ev.penalty_ppm, ev.insurance_share_ppm,
                                         ev.buffer_ppm, ev.critical_ppm, ev.block_number,
                                         ev.log_index)
    if isinstance(ev, chain_events.ChainForcedWithdrawalExecuted) and ev.seq == 0 and ev.owner:
        # seq 0: the owner executed it on-chain after the delay, outside any batch
        return ChainForcedWithdrawalExecuted(rid, ev.request_id, ev.owner.lower(),
                                             ev.subaccount, ev.asset, ev.amount,
                                             ev.block_number, ev.log_index)
    return None


__all__ = ["command_for"]
