"""``stack.json`` after the supervisor died: tools must not use the URLs of a stack that is gone.

A supervisor killed with SIGKILL cannot remove its ``stack.json``; `crossbook withdraw` and
`crossbook halt` read the matcher's URL from it, so a stale file would send them to a port that
now belongs to nothing, or to something else.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossbook.commands.common import default_matcher_url
from crossbook.supervisor import running_stack


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write(home: Path, pid: int, ws: str) -> None:
    (home / "stack.json").write_text(json.dumps(
        {"supervisor_pid": pid, "services": {"matcher": {"urls": {"ws": ws}}}}))


def test_a_live_supervisors_stack_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, os.getpid(), "ws://127.0.0.1:40001")
    st = running_stack(tmp_path)
    assert st is not None and st["supervisor_pid"] == os.getpid()
    monkeypatch.setenv("CROSSBOOK_HOME", str(tmp_path))
    monkeypatch.delenv("CROSSBOOK_MATCHER_URL", raising=False)
    assert default_matcher_url() == "ws://127.0.0.1:40001"


def test_a_dead_supervisors_stack_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, _dead_pid(), "ws://127.0.0.1:40001")
    assert running_stack(tmp_path) is None
    monkeypatch.setenv("CROSSBOOK_HOME", str(tmp_path))
    monkeypatch.delenv("CROSSBOOK_MATCHER_URL", raising=False)
    assert default_matcher_url() == "ws://127.0.0.1:8765"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"supervisor_pid": "x"}', '{"services": {}}',
                                  '{"supervisor_pid": -1}', '{"supervisor_pid": 99999999999999999999}'])
def test_a_damaged_stack_file_is_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / "stack.json").write_text(text)
    assert running_stack(tmp_path) is None


def test_no_stack_file(tmp_path: Path) -> None:
    assert running_stack(tmp_path) is None
