"""SDK tests reuse the websocket API tests' in-process server fixture."""
from __future__ import annotations

from tests.ws.conftest import server  # noqa: F401  (pytest fixture)
