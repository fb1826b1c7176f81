"""The example taker (examples/taker.py) against a real in-process matcher over loopback: a
market order takes the book up to its protection price and reports fills, final status and
position; what it cannot take is cancelled, never left resting; bad input exits with a message."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crossbook.config import PRICE, SIZE
from crossbook.paths import REPO_ROOT
from crossbook.sdk import Client, NonceManager
from matcher.server import MatcherServer
from tests.sdk.test_market_maker import load_example
from tests.ws.helpers import ETH_PX, TICK, USERS

taker_mod = load_example("taker")


async def _logged_in(server: MatcherServer, user: int) -> Client:
    c = await Client.connect(server.url, nonces=NonceManager(start=1))
    await c.login(USERS[user])
    return c


async def test_market_order_takes_levels_up_to_its_protection_price(server: MatcherServer) -> None:
    maker = await _logged_in(server, 2)
    taker = await _logged_in(server, 3)
    try:
        # asks: 0.05 at +1 tick, 0.05 at +2 ticks, 0.05 at +10%: only the first two are within 0.5%
        for px, size in ((ETH_PX + TICK, 5), (ETH_PX + 2 * TICK, 5), (ETH_PX * 11 // 10, 5)):
            await maker.place(0, False, px, size * SIZE // 100)
        r = await taker_mod.take(taker, "ETH-PERP", True, "0.07")
        assert r.status == "FILLED" and r.reason is None
        assert r.fills[0][:2] == (ETH_PX + TICK, 5 * SIZE // 100)  # price-time: best level first
        assert r.fills[1][:2] == (ETH_PX + 2 * TICK, 2 * SIZE // 100)
        assert r.filled == 7 * SIZE // 100 and r.position == 7 * SIZE // 100
        assert all(fee > 0 for _, _, fee in r.fills)

        # 0.05 more: 0.03 left within the bound, the rest is cancelled and nothing rests
        r2 = await taker_mod.take(taker, "ETH-PERP", True, "0.05")
        assert (r2.status, r2.reason) == ("CANCELLED", "IOC_REMAINDER")
        assert r2.filled == 3 * SIZE // 100 and r2.position == 10 * SIZE // 100
        assert r2.limit_price == taker_mod.protection_price(ETH_PX + 2 * TICK, True, 5_000, TICK)
        assert r2.limit_price < ETH_PX * 11 // 10
        assert not [o for o in server.engine.orders.values()
                    if o.signed.owner.lower() == USERS[3].address.lower()]

        # selling back: the bound is below the best bid, rounded down to the tick
        await maker.place(0, True, ETH_PX - TICK, 10 * SIZE // 100)
        r3 = await taker_mod.take(taker, "ETH-PERP", False, "0.1", slippage="0")
        assert r3.status == "FILLED" and r3.limit_price == ETH_PX - TICK and r3.position == 0
    finally:
        await maker.close()
        await taker.close()


async def test_market_order_refusals(server: MatcherServer) -> None:
    taker = await _logged_in(server, 3)
    try:
        with pytest.raises(taker_mod.NoLiquidity):
            await taker_mod.take(taker, "ETH-PERP", True, "0.01")  # empty book
        with pytest.raises(ValueError, match="below one lot"):
            await taker_mod.take(taker, "ETH-PERP", True, "0.0000001")
        with pytest.raises(ValueError, match="no market 'DOGE'"):
            await taker_mod.take(taker, "DOGE", True, "1")
    finally:
        await taker.close()


def test_protection_price_rounds_away_from_the_book() -> None:
    tick = PRICE // 100
    assert taker_mod.protection_price(3_000 * PRICE, True, 5_000, tick) == 3_015 * PRICE
    assert taker_mod.protection_price(3_000 * PRICE + 1, True, 0, tick) == 3_000 * PRICE + tick
    assert taker_mod.protection_price(3_000 * PRICE, False, 5_000, tick) == 2_985 * PRICE
    assert taker_mod.protection_price(tick, False, 999_999, tick) == tick  # never below one tick


def test_taker_script_requires_a_key() -> None:
    script = str(Path(REPO_ROOT) / "examples" / "taker.py")
    r = subprocess.run([sys.executable, script, "--buy", "--size", "1"], capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "--key" in r.stderr
