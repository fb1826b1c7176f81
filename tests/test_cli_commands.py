"""The account and service subcommands: --help for each, and real runs of deposit, account,
markets and oracle set against a deployed exchange on anvil (LocalExchange)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import pytest

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.devkeys import FIRST_USER, dev_address
from crossbook.chain.local_exchange import LocalExchange
from crossbook.cli import build_parser, main
from crossbook.commands.common import format_units, parse_units

COMMANDS = [["up"], ["keeper"], ["feeder"], ["deposit"], ["withdraw"], ["account"], ["markets"], ["oracle", "set"], ["reconcile"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0
    assert "usage: crossbook" in capsys.readouterr().out


def test_service_flags_have_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_METRICS_PORT", "9999")
    monkeypatch.setenv("CROSSBOOK_FEEDER_SCENARIO", "-40% in 10m")
    monkeypatch.setenv("CROSSBOOK_KEEPER_KEY", "dev:7")
    a = build_parser().parse_args(["feeder"])
    assert (a.metrics_port, a.scenario) == (9999, "-40% in 10m")
    assert build_parser().parse_args(["keeper"]).key == "dev:7"
    assert build_parser().parse_args(["matcher"]).metrics_port == 9999


def test_matcher_refuses_a_negative_busy_poll() -> None:
    with pytest.raises(SystemExit) as done:
        main(["matcher", "--busy-poll-us", "-1"])
    assert "--busy-poll-us must be >= 0" in str(done.value.code)


def test_units_are_integers() -> None:
    assert parse_units("12.5", 6) == 12_500_000
    assert parse_units("1", 18) == 10**18
    assert parse_units("0.00000001", 8) == 1
    assert parse_units("-2.50", 2) == -250
    with pytest.raises(ValueError):
        parse_units("0.0000001", 6)
    with pytest.raises(ValueError):
        parse_units("1e3", 6)
    assert format_units(1_234_567_890, 6) == "1,234.56789"
    assert format_units(-150_000_000, 8, 2) == "-1.50"


def test_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    from crossbook.logs import setup_logging

    setup_logging("svc", "INFO", "json")
    logging.getLogger("x").info("hello %d", 7, extra={"batch": 3})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    rec = json.loads(line)
    assert (rec["service"], rec["msg"], rec["batch"], rec["level"]) == ("svc", "hello 7", 3, "INFO")
    logging.getLogger().handlers.clear()


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalExchange, Path]]:
    node = AnvilNode().start()
    try:
        ex = LocalExchange(node)
        path = tmp_path_factory.mktemp("dep") / "deployment.json"
        ex.deployment.save(path)
        yield ex, path
    finally:
        node.stop()


def test_deposit_account_markets_oracle(exchange: tuple[LocalExchange, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ex, dep = exchange
    d = ["--deployment", str(dep)]
    assert main(["deposit", "2500", "--mint", "--key", f"dev:{FIRST_USER}", *d]) == 0
    out = capsys.readouterr()
    assert "deposited 2,500 USDC" in out.out and "waiting to be mined" not in out.out
    assert "deposit 2500 USDC" in out.err  # progress lines go to stderr
    assert main(["deposit", "1.5", "--asset", "WETH", "--mint", "--key", f"dev:{FIRST_USER}", *d]) == 0
    capsys.readouterr()

    assert main(["account", dev_address(FIRST_USER), "--json", *d]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["quote"] == 2_500 * 10**6 and rep["collateral"] == {"WETH": 15 * 10**17}
    assert rep["chain_health_agrees"] and not rep["liquidatable"] and rep["positions"] == []
    assert main(["account", dev_address(FIRST_USER), *d]) == 0
    assert "no open positions" in capsys.readouterr().out

    assert main(["oracle", "set", "ETH-PERP", "2345.67", *d]) == 0
    assert "oracle ETH = 2,345.67" in capsys.readouterr().out
    assert main(["markets", "--json", *d]) == 0
    rep = json.loads(capsys.readouterr().out)
    eth = rep["markets"][0]
    assert (eth["symbol"], eth["oracle_price"], eth["open_interest"]) == ("ETH-PERP", 234_567_000_000, 0)
    assert main(["markets", *d]) == 0
    assert "ETH-PERP" in capsys.readouterr().out


def test_account_shows_the_sdks_liquidation_price(exchange: tuple[LocalExchange, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``crossbook account`` reports the SDK's liquidation price (one search for CLI, dashboard
    and bots: tests/sdk/test_risk_units.py), here of a ~8x long."""
    from crossbook.chain.local_exchange import user_signer
    from crossbook.config import SIZE, USD, risk_params
    from crossbook.sdk.risk import liquidation_price

    ex, dep = exchange
    taker, maker = user_signer(41), user_signer(42)
    ex.fund(taker.address, 0, "USDC", 3_000 * USD)
    ex.fund(maker.address, 0, "USDC", 1_000_000 * USD)
    px = ex.client.prices().markets[0]  # whatever an earlier test of the module left
    assert not ex.settle([ex.fill(ex.order(taker, 0, True, px, 10 * SIZE),
                                  ex.order(maker, 0, False, px, 10 * SIZE), 10 * SIZE, px)]).rejected
    assert main(["account", taker.address, "--json", "--deployment", str(dep)]) == 0
    rep = json.loads(capsys.readouterr().out)
    liq = rep["positions"][0]["liquidation_price"]
    acct = ex.client.subaccount(taker.address, 0)
    assert liq == liquidation_price(acct, risk_params(), ex.client.prices(), 0)
    # a long: liquidated on the way down only
    assert (rep["positions"][0]["liquidation_down"], rep["positions"][0]["liquidation_up"]) == (liq, None)
    assert px * 8 // 10 < liq < px


def test_account_during_an_oracle_outage(exchange: tuple[LocalExchange, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """ETH's feed goes stale: ``crossbook account`` still shows the balances and the position,
    says health is unavailable and why, instead of failing on the contract's OracleStale."""
    from crossbook.chain.local_exchange import user_signer

    ex, dep = exchange
    owner = user_signer(41).address  # long ETH (the test above)
    assert ex.client.position(owner, 0, 0).size > 0
    feed = ex.client.feed("ETH")
    answer = feed.functions.latestRoundData().call()[1]
    now = ex.w3.eth.get_block("latest")["timestamp"]
    ex.admin.transact(feed.functions.setAnswerAt(answer, now - 2 * 3600))
    try:
        assert main(["account", owner, "--json", "--deployment", str(dep)]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["unpriced"] == ["ETH-PERP"]
        assert rep["equity"] is None and rep["liquidatable"] is None and rep["chain_health_agrees"] is None
        pos = rep["positions"][0]
        assert pos["size"] > 0 and pos["oracle_price"] is None and pos["unrealized_pnl"] is None
        assert pos["liquidation_price"] is not None  # it sets the feed's price itself
        assert main(["account", owner, "--deployment", str(dep)]) == 0
        out = capsys.readouterr().out
        assert "health    unavailable: no oracle price for ETH-PERP" in out and "ETH-PERP" in out
        # the dashboard's account lookup shows the same, instead of the contract's error
        from crossbook.dashboard.feed import DashboardFeed
        from crossbook.sdk import units

        view = DashboardFeed("ws://127.0.0.1:9", ex.deployment, rpc_url=ex.node.url).account(owner, 0)
        assert view["unpriced"] == ["ETH-PERP"] and view["liquidatable"] is None
        assert view["equity"] == view["maintenance_health"] == view["leverage"] == "-"
        row = view["positions"][0]
        assert row["size"] == units.fmt(pos["size"], units.SIZE_SCALE) and row["oracle"] == "-"
        assert row["liquidation_price"] == units.fmt(pos["liquidation_price"], units.PRICE_SCALE, 2)
    finally:
        ex.admin.transact(feed.functions.setAnswer(answer))


def test_relayer_help_shows_the_relayers_own_defaults() -> None:
    # the CLI leaves unset tuning to settlement's dataclasses and only names their values in
    # the help, so the help must follow them
    from settlement.batcher import BatchLimits
    from settlement.relayer import RelayerConfig

    sub = build_parser()._subparsers._group_actions[0].choices["relayer"]  # type: ignore[union-attr,index]
    helps = {a.dest: a.help or "" for a in sub._actions}
    limits, cfg = BatchLimits(), RelayerConfig()
    assert f"[{limits.max_items}]" in helps["max_items"]
    assert f"[{limits.max_age_s}]" in helps["max_age"]
    assert f"[{limits.max_gas}:" in helps["max_gas"]
    assert f"[{cfg.max_in_flight}]" in helps["in_flight"]
    assert build_parser().parse_args(["relayer"]).max_gas is None  # unset: the dataclass decides
