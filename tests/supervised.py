"""`crossbook up` as a child process of a test: a temp state dir, free ports for everything,
waiting for "Crossbook is up", reading stack.json, and SIGINT to stop. Shared by
tests/test_supervisor.py and tests/e2e/test_product.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crossbook.paths import REPO_ROOT

FREE_PORTS = ["--port", "0", "--matcher-port", "0", "--dashboard-port", "0", "--metrics-port-base", "0"]


class Up:
    """A running `crossbook up` child (all ports free ones) and what it wrote."""

    def __init__(self, home: Path, extra_args: list[str] | None = None) -> None:
        self.home = home
        self.out = home / f"up.{int(time.time() * 1000)}.out"
        env = {**os.environ, "CROSSBOOK_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crossbook.cli", "up", *FREE_PORTS, *(extra_args or [])],
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        self.state: dict[str, Any] = {}

    def text(self) -> str:
        """Everything `up` printed so far."""
        return self.out.read_text(errors="replace")

    def wait_up(self, timeout: float = 120) -> dict[str, Any]:
        """Block until `up` says it is up; return stack.json."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"crossbook up exited {self.proc.returncode}:\n{self.text()[-4000:]}")
            if "Crossbook is up" in self.text():
                self.state = json.loads((self.home / "stack.json").read_text())
                return self.state
            time.sleep(0.2)
        raise AssertionError("stack not up in time:\n" + self.text()[-4000:])

    def refresh(self) -> dict[str, Any]:
        """Re-read stack.json (the supervisor rewrites it every 2 s)."""
        self.state = json.loads((self.home / "stack.json").read_text())
        return self.state

    def stop(self, timeout: float = 60) -> int:
        """SIGINT (a terminal's Ctrl-C) and wait; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill_if_running(self) -> None:
        """Test teardown: SIGINT, SIGKILL if it does not stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie is dead for our purposes: it only waits for its parent's reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


__all__ = ["FREE_PORTS", "Up", "alive"]
