"""EventDecoder: the liquidation-path events and the owner-executed escape hatch (the
``Withdrawn`` log folded into the ``ForcedWithdrawalExecuted`` that follows it in the same
transaction), decoded from logs built with the contract's own ABI."""
from __future__ import annotations

from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from crossbook.chain.artifacts import load_artifact
from settlement.events import (
    ChainBadDebtSettled,
    ChainCollateralLiquidated,
    ChainDeleveraged,
    ChainForcedWithdrawalExecuted,
    ChainLiquidated,
    ChainLiquidationParamsSet,
    ChainWithdrawn,
)
from settlement.watcher import EventDecoder

ABI = {e["name"]: e for e in load_artifact("Clearinghouse").abi if e.get("type") == "event"}
OWNER = to_checksum_address("0x" + "aa" * 20)
LIQ = to_checksum_address("0x" + "bb" * 20)


def make_log(name: str, args: dict[str, Any], tx: int = 1, log_index: int = 0) -> dict[str, Any]:
    """A raw log as eth_getLogs returns it, for event ``name`` with ``args``."""
    ev = ABI[name]
    sig = f"{name}(" + ",".join(i["type"] for i in ev["inputs"]) + ")"
    topics = [keccak(text=sig)] + [abi_encode([i["type"]], [args[i["name"]]])
                                   for i in ev["inputs"] if i["indexed"]]
    plain = [i for i in ev["inputs"] if not i["indexed"]]
    data = abi_encode([i["type"] for i in plain], [args[i["name"]] for i in plain])
    return {"address": "0x" + "11" * 20, "topics": topics, "data": data, "blockNumber": 7,
            "blockHash": b"\x01" * 32, "logIndex": log_index, "transactionHash": tx.to_bytes(32, "big")}


def test_liquidation_events_decode() -> None:
    logs = [
        make_log("Liquidated", dict(owner=OWNER, subaccount=2, market=1, liquidator=LIQ,
                                    liquidatorSubaccount=3, sizeDelta=-5_000, price=123, penalty=9,
                                    insuranceShare=4), log_index=0),
        make_log("CollateralLiquidated", dict(owner=OWNER, subaccount=2, asset=1, liquidator=LIQ,
                                              liquidatorSubaccount=3, amount=10**17, price=77, paid=55),
                 log_index=1),
        make_log("BadDebtSettled", dict(owner=OWNER, subaccount=2, insurancePaid=5, feePoolPaid=6,
                                        unbacked=7), log_index=2),
        make_log("Deleveraged", dict(owner=OWNER, subaccount=2, market=0, counterparty=LIQ,
                                     counterpartySubaccount=0, sizeDelta=300, price=99), log_index=3),
        make_log("LiquidationParamsSet", dict(penaltyPpm=1, insuranceSharePpm=2, bufferPpm=3,
                                              criticalPpm=4), log_index=4),
    ]
    out = EventDecoder().decode_logs(logs)
    assert [type(e) for e in out] == [ChainLiquidated, ChainCollateralLiquidated, ChainBadDebtSettled,
                                      ChainDeleveraged, ChainLiquidationParamsSet]
    liq, coll, bad, adl, params = out
    assert isinstance(liq, ChainLiquidated)
    assert (liq.owner, liq.subaccount, liq.market, liq.liquidator, liq.liquidator_subaccount,
            liq.size_delta, liq.price, liq.penalty, liq.insurance_share) == (OWNER, 2, 1, LIQ, 3, -5_000, 123, 9, 4)
    assert (liq.block_number, liq.log_index) == (7, 0)
    assert isinstance(coll, ChainCollateralLiquidated) and (coll.amount, coll.price, coll.paid) == (10**17, 77, 55)
    assert isinstance(bad, ChainBadDebtSettled) and (bad.insurance_paid, bad.fee_pool_paid, bad.unbacked) == (5, 6, 7)
    assert isinstance(adl, ChainDeleveraged) and (adl.counterparty, adl.size_delta, adl.price) == (LIQ, 300, 99)
    assert isinstance(params, ChainLiquidationParamsSet) and params.critical_ppm == 4


def test_forced_withdrawal_executed_carries_the_withdrawn_of_its_transaction() -> None:
    logs = [
        # owner-executed (seq 0) in tx 1, a FORCED batch item (seq 12) in tx 2
        make_log("Withdrawn", dict(owner=OWNER, subaccount=4, asset=0, amount=300, seq=0), tx=1, log_index=0),
        make_log("ForcedWithdrawalExecuted", dict(requestId=9), tx=1, log_index=1),
        make_log("Withdrawn", dict(owner=LIQ, subaccount=0, asset=1, amount=5, seq=12), tx=2, log_index=2),
        make_log("ForcedWithdrawalExecuted", dict(requestId=10), tx=2, log_index=3),
    ]
    out = EventDecoder().decode_logs(logs)
    assert [type(e) for e in out] == [ChainWithdrawn, ChainForcedWithdrawalExecuted] * 2
    ex1, ex2 = out[1], out[3]
    assert isinstance(ex1, ChainForcedWithdrawalExecuted) and isinstance(ex2, ChainForcedWithdrawalExecuted)
    assert (ex1.request_id, ex1.owner, ex1.subaccount, ex1.asset, ex1.amount, ex1.seq) == (9, OWNER, 4, 0, 300, 0)
    assert (ex2.request_id, ex2.owner, ex2.seq) == (10, LIQ, 12)
    # alone (no Withdrawn seen): decoded with empty owner fields, which the matcher ignores
    (lone,) = EventDecoder().decode_logs([make_log("ForcedWithdrawalExecuted", dict(requestId=3))])
    assert isinstance(lone, ChainForcedWithdrawalExecuted) and lone.owner == "" and lone.request_id == 3
