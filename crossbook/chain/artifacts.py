"""Load ABIs and bytecode from forge's build output (never from hand-copied files)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from crossbook.paths import CONTRACTS_OUT


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


@lru_cache(maxsize=None)
def load_artifact(name: str, source: str | None = None) -> Artifact:
    """Read `contracts/out/<source>/<name>.json`; `source` defaults to `<name>.sol`."""
    path = CONTRACTS_OUT / (source or f"{name}.sol") / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"artifact {path} missing; build the contracts first (`make build`)"
        )
    data = json.loads(path.read_text())
    bytecode = data["bytecode"]["object"]
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    return Artifact(name=name, abi=data["abi"], bytecode=bytecode)
