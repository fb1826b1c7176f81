"""Where the repository keeps things: contracts build output, npm binaries, local state."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
CONTRACTS_OUT = CONTRACTS_DIR / "out"
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
# the embedded chain's state inside a state dir: anvil loads it at start and saves it on stop
ANVIL_STATE_FILE = "anvil-state.json"


def state_dir() -> Path:
    """Directory for local runtime state (anvil state, deployment file, journals).

    Overridable with CROSSBOOK_HOME so tests and several stacks never share state.
    """
    return Path(os.environ.get("CROSSBOOK_HOME", str(REPO_ROOT / ".crossbook")))


def tool(name: str) -> str:
    """Path of an npm-installed chain tool (anvil, forge, cast)."""
    path = NODE_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found at {path}; run `make setup` (npm ci) first")
    return str(path)
