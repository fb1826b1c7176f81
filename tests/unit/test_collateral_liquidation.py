"""crossbook.liquidation.collateral_liquidation (docs/protocol.md §9.5) on dust: the contract takes a whole
balance worth less than a quote atom for nothing (contracts/test/AuditLiquidation.t.sol
test_dustCollateralDoesNotBlockBadDebt), so the keeper's plan must too, or a bankrupt account holding 1 wei
of collateral is never cleared."""
from __future__ import annotations

import pytest

from crossbook.config import PRICE
from crossbook.liquidation import DEFAULT_LIQUIDATION_PARAMS, NotLiquidatable, collateral_liquidation

ETH_PX = 3_000 * PRICE


def test_a_whole_dust_balance_goes_for_nothing() -> None:
    amount, pc, paid = collateral_liquidation(-5_000_000, 1, ETH_PX, 18, 2**256 - 1, DEFAULT_LIQUIDATION_PARAMS)
    assert (amount, paid) == (1, 0)
    assert 0 < pc < ETH_PX  # the penalty price, as for any other amount


def test_a_capped_amount_worth_nothing_still_refuses() -> None:
    # 1 wei of a 1 ETH balance: worth nothing, and it would not clear the balance
    with pytest.raises(NotLiquidatable, match="NothingToLiquidate"):
        collateral_liquidation(-5_000_000, 10**18, ETH_PX, 18, 1, DEFAULT_LIQUIDATION_PARAMS)


def test_a_balance_worth_something_is_paid_for() -> None:
    amount, pc, paid = collateral_liquidation(-5_000_000, 10**18, ETH_PX, 18, 2**256 - 1, DEFAULT_LIQUIDATION_PARAMS)
    assert paid >= 5_000_000 and amount <= 10**18
    assert paid == amount * pc // 10**20
