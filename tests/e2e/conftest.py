"""End-to-end fixtures: a fresh stack (anvil + contracts + services) per test."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.stack import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A deployed exchange on its own anvil; services are started by the test."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()
