"""A service whose /metrics port is taken (`crossbook keeper --dry-run` beside a running stack,
whose keeper holds 9104) says so in one line, naming the way out, instead of an
``OSError: [Errno 98] Address already in use`` traceback from the exporter thread's bind."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from crossbook.paths import REPO_ROOT


@pytest.mark.parametrize("service", ["keeper", "watcher", "feeder"])
def test_a_taken_metrics_port_is_one_line(tmp_path: Path, service: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CROSSBOOK_HOME": str(tmp_path)}
        r = subprocess.run([sys.executable, "-m", "crossbook.cli", service, "--metrics-port", str(port),
                            "--deployment", str(tmp_path / "none.json")],
                           env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"{service}: cannot serve /metrics on 127.0.0.1:{port} (Address already in use; a running stack's "
        f"{service}?): pass --metrics-port 0 to run without /metrics, or another port")
