"""Sans-I/O: funding rates and oracle price paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import accrued_funding
from crossbook.protocol_types import FundingItem
from keeper.funding import FundingCalculator, FundingPoster, impact_price, index_delta, premium_ppm
from keeper.oracle_feeder import RandomWalk, ReplayPath, ScenarioPath, feed_answer

P = 10**8


def test_premium_sign_and_symmetry() -> None:
    assert premium_ppm(3_003 * P, 3_003 * P, 3_000 * P) == 1_000  # book above oracle: longs pay
    assert premium_ppm(2_997 * P, 2_997 * P, 3_000 * P) == -1_000
    assert premium_ppm(2_999 * P, 3_001 * P, 3_000 * P) == 0
    # truncation toward zero keeps mirror premiums exact opposites
    assert premium_ppm(3_000 * P + 7, 3_000 * P + 7, 3_000 * P) == -premium_ppm(3_000 * P - 7, 3_000 * P - 7, 3_000 * P)


def test_average_and_clamp() -> None:
    calc = FundingCalculator(max_rate_ppm={0: 1_000, 1: 1_000})
    for p in (3_003, 3_006, 3_000):
        calc.add_sample(0, p * P, p * P, 3_000 * P)
    assert calc.rate(0) == 1_000  # mean of 1000, 2000, 0
    calc.add_sample(1, 2_000 * P, 2_000 * P, 3_000 * P)  # -33%: clamped
    assert calc.rate(1) == -1_000
    assert calc.rate(2) == 0
    sent: list[FundingItem] = []

    class Sink:
        def submit(self, item: FundingItem) -> None:
            sent.append(item)

    poster = FundingPoster(calc, Sink())
    assert poster.end_interval() == [FundingItem(0, 1_000), FundingItem(1, -1_000)]
    assert sent == [FundingItem(0, 1_000), FundingItem(1, -1_000)] and poster.posted == 2 and calc.close_interval() == {}


@pytest.mark.parametrize("rate", [1_000, -1_000, 7, -3, 999])
def test_zero_sum_conventions(rate: int) -> None:
    price = 3_123_45678901
    d = index_delta(rate, 1_000, price)
    size = 12_345_678_901
    long_owes = accrued_funding(size, d, 0)
    short_owes = accrued_funding(-size, d, 0)
    assert (long_owes > 0) == (rate > 0) or long_owes == 0
    assert 0 <= long_owes + short_owes <= 1  # rounds in the system's favour, never pays out more
    assert abs(long_owes) <= abs(size * d) // NOTIONAL_DIV + 1


def test_impact_price() -> None:
    asks = [(3_000 * P, 1 * P), (3_010 * P, 10 * P)]
    assert impact_price(asks, 3_000 * 10**6) == 3_000 * P
    px = impact_price(asks, 6_010 * 10**6)
    assert px is not None and 3_000 * P < px < 3_010 * P
    assert impact_price(asks, 10**15) is None


def test_walk_is_deterministic_and_integer() -> None:
    a, b = RandomWalk(3_000 * P, seed=42, jump_ppm=50_000), RandomWalk(3_000 * P, seed=42, jump_ppm=50_000)
    path_a = [a.price_at(t * 1_000) for t in range(2_000)]
    assert path_a == [b.price_at(t * 1_000) for t in range(2_000)]
    assert all(isinstance(p, int) and p >= 1 for p in path_a)
    assert path_a != [RandomWalk(3_000 * P, seed=43).price_at(t * 1_000) for t in range(2_000)]
    steps = [abs(y * PPM // x - PPM) for x, y in zip(path_a, path_a[1:])]
    assert max(steps) >= 45_000  # jumps happen
    assert a.price_at(5_500) == a.price_at(5_000)  # held between steps


def test_scenario_minus_40_in_10_minutes() -> None:
    s = ScenarioPath.parse(3_000 * P, "-40% in 10m")
    assert s.target == 1_800 * P
    assert s.price_at(0) == 3_000 * P
    assert s.price_at(300_000) == 2_400 * P
    assert s.price_at(599_999) > 1_800 * P
    assert s.price_at(600_000) == 1_800 * P == s.price_at(10**9)
    prices = [s.price_at(t) for t in range(0, 600_001, 1_000)]
    assert prices == sorted(prices, reverse=True)
    d = ScenarioPath.parse(100 * P, "+12.5% in 90s after 30s")
    assert d.price_at(30_000) == 100 * P and d.price_at(120_000) == 112_50000000
    with pytest.raises(ValueError):
        ScenarioPath.parse(P, "down a lot")


def test_replay_file(tmp_path: Path) -> None:
    f = tmp_path / "eth.csv"
    f.write_text("# t_ms,price\n0,300000000000\n1000,310000000000\n\n5000,250000000000\n")
    r = ReplayPath.load(f)
    assert [r.price_at(t) for t in (0, 999, 1000, 4999, 5000, 99999)] == [
        3_000 * P, 3_000 * P, 3_100 * P, 3_100 * P, 2_500 * P, 2_500 * P]
    assert feed_answer(3_000 * P, 18) == 3_000 * 10**18
