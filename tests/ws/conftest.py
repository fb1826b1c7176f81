"""Fixtures of the websocket API tests: a fresh engine + server per test."""
from __future__ import annotations

from typing import AsyncIterator

import pytest

from matcher.server import MatcherServer
from tests.ws.helpers import start_server


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[MatcherServer]:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path))
    yield srv
    await srv.close()
