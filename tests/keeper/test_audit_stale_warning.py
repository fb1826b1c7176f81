"""A keeper says in its log what an operator must know: a stale oracle (once, and when prices
are back) and every liquidation it got mined.

The keeper already refuses to plan liquidations on a market whose price the oracle adapter
refuses (tests/keeper/test_drills.py), but it did so silently: an operator watching a keeper
that liquidates nothing during a crash had no line in its log saying why.
"""
from __future__ import annotations

import logging

import pytest

from crossbook.chain.devkeys import KEEPER, dev_key
from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import PRICE
from tests.keeper.helpers import close, drive, make_keeper
from tests.keeper.test_drills import A, B, ETH, _freeze_eth, _fund_keepers, _setup


async def test_stale_feed_is_warned_once_and_its_return_noted(ex: LocalExchange,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        caplog.set_level(logging.INFO, logger="keeper.liquidator")
        await k.tick()
        assert k.unpriced_markets == [] and "stale" not in caplog.text
        _freeze_eth(ex)
        await k.tick()
        await k.tick()
        warned = [r for r in caplog.records if "oracle price unavailable" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert f"market id(s) [{ETH}]" in warned[0].getMessage()
        assert k.unpriced_markets == [ETH] and k.stats.sent == 0
        ex.set_price("ETH", 3_000 * PRICE)
        await k.tick()
        assert k.unpriced_markets == []
        assert "oracle prices available again for every market" in caplog.text
    finally:
        await close([k])


async def test_each_mined_liquidation_is_logged(ex: LocalExchange, caplog: pytest.LogCaptureFixture) -> None:
    _setup(ex)
    _fund_keepers(ex, KEEPER)
    k = make_keeper(ex, dev_key(KEEPER))
    try:
        caplog.set_level(logging.INFO, logger="keeper.liquidator")
        ex.set_price("ETH", 2_550 * PRICE)  # A and B below maintenance
        await drive([k])
        assert k.stats.mined_ok >= 2
        mined = [r.getMessage() for r in caplog.records if " mined in block " in r.getMessage()]
        assert len(mined) == k.stats.mined_ok
        for who in (A, B):
            assert any(m.startswith(f"liquidate of {who.address}/0 mined in block ") for m in mined), mined
    finally:
        await close([k])
