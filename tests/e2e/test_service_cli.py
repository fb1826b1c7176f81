"""The service subcommands exist, document their flags and environment fallbacks."""
from __future__ import annotations

import pytest

from crossbook.cli import build_parser


@pytest.mark.parametrize("cmd, env", [
    ("matcher", ["CROSSBOOK_JOURNAL_DIR", "CROSSBOOK_OPERATOR_TOKEN", "CROSSBOOK_DEPLOYMENT",
                 "CROSSBOOK_RPC_URL"]),
    ("relayer", ["CROSSBOOK_OPERATOR_KEY", "CROSSBOOK_MATCHER_URL", "CROSSBOOK_DEPLOYMENT"]),
    ("watcher", ["CROSSBOOK_OPERATOR_TOKEN", "CROSSBOOK_MATCHER_URL", "CROSSBOOK_CONFIRMATIONS"]),
])
def test_help_lists_flags_and_environment(cmd: str, env: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in env:
        assert name in out


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSBOOK_MATCHER_URL", "ws://matcher:9000")
    monkeypatch.setenv("CROSSBOOK_OPERATOR_TOKEN", "t0k")
    monkeypatch.setenv("CROSSBOOK_CONFIRMATIONS", "3")
    args = build_parser().parse_args(["watcher"])
    assert (args.matcher_url, args.operator_token, args.confirmations) == ("ws://matcher:9000", "t0k", 3)
    # a flag beats the environment
    args = build_parser().parse_args(["watcher", "--confirmations", "2"])
    assert args.confirmations == 2
