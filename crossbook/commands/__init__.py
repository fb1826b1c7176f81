"""CLI subcommands that live in their own modules (each exposes ``register(subparsers)``)."""
from __future__ import annotations

import argparse
import importlib

# one module per subcommand group; `crossbook.cli.build_parser` calls :func:`register`
_MODULES = ("keeper", "feeder", "funding", "deposit", "withdraw", "account", "markets", "oracle", "mm", "dashboard",
            "halt")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add every module's subcommands to the CLI's subparsers."""
    for name in _MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")
        mod.register(sub)
