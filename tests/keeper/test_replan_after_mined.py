"""An action mined while its account was skipped as in flight is followed up at once.

The keeper skips accounts with an action in flight. When that action's receipt arrives after
the tick of its block (a loaded node mines asynchronously), the account's next step, here B's
bad debt after its liquidation, used to wait for another block: on a quiet chain, for ever.
This is the flake CI hit in test_drills (B left at -7.5 USD).
"""
from __future__ import annotations

from crossbook.chain.anvil import rpc_call
from crossbook.chain.devkeys import KEEPER, dev_key
from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import PRICE
from tests.keeper.helpers import close, make_keeper
from tests.keeper.test_drills import A, B, _fund_keepers, _setup


async def test_bad_debt_follows_a_liquidation_mined_after_its_tick(ex: LocalExchange) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        await k.step()
        ex.set_price("ETH", 2_550 * PRICE)  # A and B below maintenance, both left with a deficit
        rpc_call(ex.node.url, "evm_setAutomine", [False])
        try:
            await k.step()  # sends both liquidations; they are not mined yet
            assert {key: tx.plan.kind for key, tx in k.in_flight.items()} == {
                (A.address, 0): "liquidate", (B.address, 0): "liquidate"}
            head = ex.w3.eth.block_number
            rpc_call(ex.node.url, "evm_mine")
            # the new block's tick still sees both in flight; their receipts come after it, and no
            # further block will: the deficits must be taken up in this same step
            await k.step()
            assert {key: tx.plan.kind for key, tx in k.in_flight.items()} == {
                (A.address, 0): "bad_debt", (B.address, 0): "bad_debt"}
            rpc_call(ex.node.url, "evm_mine")
            await k.check_in_flight()
            assert not k.in_flight
        finally:
            rpc_call(ex.node.url, "evm_setAutomine", [True])
        bad = ex.client.contract.events.BadDebtSettled().get_logs(from_block=head + 1)
        assert {e["args"]["owner"] for e in bad} == {A.address, B.address}
        assert ex.client.health(A.address, 0).equity == ex.client.health(B.address, 0).equity == 0
        assert k.stats.errors == 0
    finally:
        await close([k])
