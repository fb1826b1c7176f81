"""The dashboard's view of the matcher's messages, without a browser: a market whose oracle price
the chain refuses shows as reduce-only, and shows its price again once it is back."""
from __future__ import annotations

from crossbook.chain.local_exchange import LocalExchange
from crossbook.config import PRICE
from crossbook.dashboard.feed import NO_ORACLE, DashboardFeed


def test_a_market_without_an_oracle_price_shows_as_reduce_only(ex: LocalExchange) -> None:
    feed = DashboardFeed("ws://127.0.0.1:9", ex.deployment, rpc_url=ex.node.url)  # never connects
    feed._on_markets({"type": "markets", "markets": [
        {"market": 0, "symbol": "ETH-PERP", "oracle_price": 3_000 * PRICE},
        {"market": 1, "symbol": "BTC-PERP", "oracle_price": 60_000 * PRICE}]})
    assert [m["oracle"] for m in feed.state()["markets"]] == ["3000.00", "60000.00"]
    feed._on_prices({"type": "prices", "assets": {}, "markets": {}, "unavailable_assets": [1],
                     "unavailable_markets": [0]})
    assert [m["oracle"] for m in feed.state()["markets"]] == [NO_ORACLE, "60000.00"]
    feed._on_prices({"type": "prices", "assets": {}, "markets": {"0": 2_990 * PRICE},
                     "unavailable_assets": [], "unavailable_markets": []})
    assert [m["oracle"] for m in feed.state()["markets"]] == ["2990.00", "60000.00"]


def test_a_hedged_short_shows_both_liquidation_prices() -> None:
    from crossbook.dashboard.feed import _liq

    both = {"liquidation_price": 1_333 * PRICE, "liquidation_down": 1_333 * PRICE,
            "liquidation_up": 8_663 * PRICE}
    assert _liq(both) == "<= 1333.00 or >= 8663.00"
    one = {"liquidation_price": 2_100 * PRICE, "liquidation_down": 2_100 * PRICE, "liquidation_up": None}
    assert _liq(one) == "2100.00"
    now = {"liquidation_price": 3_000 * PRICE, "liquidation_down": 3_000 * PRICE,
           "liquidation_up": 3_000 * PRICE}  # liquidatable at the current price already
    assert _liq(now) == "3000.00"
