"""The keeper index folds the watcher's liquidation-family events into "re-read these
sub-accounts": every party whose state the event changed, and nothing else."""
from __future__ import annotations

from eth_utils import to_checksum_address

from crossbook.config import risk_params
from keeper.index import SubAccountIndex
from settlement.events import (
    ChainBadDebtSettled, ChainCollateralLiquidated, ChainDeleveraged, ChainLiquidated,
)
from settlement.relayer import connect

T = to_checksum_address("0x" + "aa" * 20)
L = to_checksum_address("0x" + "bb" * 20)
POS = {"block_number": 7, "block_hash": "0x" + "00" * 32, "log_index": 0, "tx_hash": "0x" + "11" * 32}


def _index() -> SubAccountIndex:
    # apply() of these events does no I/O: the node behind the URL is never asked
    return SubAccountIndex(connect("http://127.0.0.1:9"), "http://127.0.0.1:9",
                           "0x" + "cc" * 20, risk_params())


async def test_each_liquidation_event_marks_both_parties() -> None:
    cases = [
        (ChainLiquidated(owner=T.lower(), subaccount=1, market=0, liquidator=L, liquidator_subaccount=2,
                         size_delta=-5, price=3, penalty=1, insurance_share=0, **POS),
         {(T, 1), (L, 2)}),
        (ChainCollateralLiquidated(owner=T, subaccount=3, asset=1, liquidator=L.lower(),
                                   liquidator_subaccount=4, amount=9, price=2, paid=18, **POS),
         {(T, 3), (L, 4)}),
        (ChainDeleveraged(owner=T, subaccount=5, market=1, counterparty=L, counterparty_subaccount=6,
                          size_delta=2, price=3, **POS),
         {(T, 5), (L, 6)}),
        (ChainBadDebtSettled(owner=T, subaccount=7, insurance_paid=1, fee_pool_paid=0, unbacked=0, **POS),
         {(T, 7)}),
    ]
    for ev, expected in cases:
        idx = _index()
        await idx.apply([ev])
        assert idx.dirty == expected and idx.known == expected, type(ev).__name__
        assert idx.events_seen == 1
