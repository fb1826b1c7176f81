"""The matcher's oracle poller on anvil: it hands the engine the adapter's prices, and the ids whose
price the adapter starts to refuse (a stale feed), so the matcher's risk checks never go on with a
price the contract no longer takes; a price that comes back is handed over again."""
from __future__ import annotations

from web3 import AsyncWeb3

from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import PRICE
from settlement.services import OraclePoller

ETH_PX, BTC_PX, SOL_PX = 3_000 * PRICE, 60_000 * PRICE, 150 * PRICE


async def test_poller_reports_refused_prices_and_their_return(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    poller = OraclePoller(aw3, ex.deployment.oracle)
    up = await poller.read()
    assert up is not None
    assert up.markets == {0: ETH_PX, 1: BTC_PX, 2: SOL_PX} and up.assets == {1: ETH_PX, 2: BTC_PX}
    assert up.gone_markets == [] and up.gone_assets == []
    poller.applied(up)
    assert await poller.read() is None  # no new block
    # two hours on, every feed but ETH posted again: ETH (market 0, and WETH, asset 1) is refused
    ex.advance_time(2 * 3600)
    for sym in ("BTC", "SOL"):
        feed = ex.client.feed(sym)
        ex.admin.transact(feed.functions.setAnswer(feed.functions.latestRoundData().call()[1]))
    up = await poller.read()
    assert up is not None
    assert up.markets == {} and up.assets == {}
    assert up.gone_markets == [0] and up.gone_assets == [1]
    # not applied (the engine refused it, say): reported again at the next block
    ex.advance_time(1)
    again = await poller.read()
    assert again == up
    poller.applied(up)
    ex.advance_time(1)
    assert await poller.read() is None
    # ETH posted again at the same answer: back, although the value did not change
    ex.set_price("ETH", ETH_PX)
    up = await poller.read()
    assert up is not None
    assert up.markets == {0: ETH_PX} and up.assets == {1: ETH_PX}
    assert up.gone_markets == [] and up.gone_assets == []


async def test_a_fresh_poller_reports_every_refused_price(ex: LocalExchange, aw3: AsyncWeb3) -> None:
    """A matcher restarted during an outage recovers the last price it had from its journal: the
    new poller's first update names the refused ids, so the engine drops them."""
    feed = ex.client.feed("ETH")
    now = ex.w3.eth.get_block("latest")["timestamp"]
    ex.admin.transact(feed.functions.setAnswerAt(ETH_PX, now - 2 * 3600))
    poller = OraclePoller(aw3, ex.deployment.oracle)
    up = await poller.read()
    assert up is not None
    assert up.markets == {1: BTC_PX, 2: SOL_PX} and up.assets == {2: BTC_PX}
    assert up.gone_markets == [0] and up.gone_assets == [1]
    poller.applied(up)
    ex.advance_time(1)
    assert await poller.read() is None  # known now: not repeated
