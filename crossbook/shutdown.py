"""Graceful shutdown of a service process: SIGTERM and SIGINT (the supervisor, docker, Ctrl-C)."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Callable


def on_shutdown_signals(callback: Callable[[], object]) -> None:
    """Call ``callback`` on the running loop when SIGTERM or SIGINT arrives. Where the loop cannot
    install signal handlers (not the main thread, or no support), nothing is installed."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM / SIGINT."""
    stop = asyncio.Event()
    on_shutdown_signals(stop.set)
    return stop
