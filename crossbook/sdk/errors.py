"""Exceptions raised by the SDK."""
from __future__ import annotations


class SdkError(Exception):
    """Base class of every SDK error."""


class Rejected(SdkError):
    """The matcher refused a request: ``code`` is the API error code (docs/api.md), e.g.
    ``OFF_TICK`` or ``INSUFFICIENT_MARGIN``; ``message`` its human text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(SdkError):
    """The connection dropped while a request was in flight. Its outcome is unknown: the
    matcher may or may not have applied it (check the ``orders`` channel after reconnecting)."""


class NotConnected(SdkError):
    """A request was made while the client has no live connection (and is not reconnecting)."""
