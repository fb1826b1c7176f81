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


def test_liquidation_price_is_where_maintenance_health_turns_negative(
        exchange: tuple[LocalExchange, Path]) -> None:
    from crossbook.commands.account import _with_feed_price, liquidation_price
    from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, risk_params
    from crossbook.fixedpoint import NOTIONAL_DIV
    from crossbook.margin import Position, Prices, SubAccount, compute_health_at

    params = risk_params()
    prices = Prices(assets={1: 3000 * PRICE, 2: 60_000 * PRICE}, markets={0: 3000 * PRICE, 1: 60_000 * PRICE,
                                                                            2: 150 * PRICE}, funding={0: 0, 1: 0, 2: 0})
    for size in (10 * SIZE, -10 * SIZE):
        cost = size * 3000 * PRICE // NOTIONAL_DIV  # 10 ETH bought (sold) at 3000 on 3000 USD of equity
        acct = SubAccount(quote=3_000 * 10**6 - cost, positions={0: Position(size, cost, 0)})
        liq = liquidation_price(acct, params, prices, DEFAULT_SPEC, 0)
        assert liq is not None

        def h(p: int) -> int:
            return compute_health_at(acct, params, _with_feed_price(prices, DEFAULT_SPEC, 0, p)).maintenance_health

        assert h(liq) < 0
        assert h(liq + (1 if size > 0 else -1)) >= 0  # the boundary, to the last 1e-8
        assert (2700 * PRICE < liq < 3000 * PRICE) if size > 0 else (3000 * PRICE < liq < 3300 * PRICE)


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
