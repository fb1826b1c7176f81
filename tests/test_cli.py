"""The `crossbook` console script: help for every command, clean errors for bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from crossbook.cli import BENCHMARKS, build_parser, main


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    for command in ("bench", "up"):
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0


def test_unknown_benchmark_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_benchmarks_are_importable_modules_with_run() -> None:
    import importlib

    for module in BENCHMARKS.values():
        assert callable(importlib.import_module(module).run)


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "crossbook.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "bench" in out.stdout
