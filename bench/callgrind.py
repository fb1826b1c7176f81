"""Instruction counts from valgrind's callgrind, for the benchmarks' ``--callgrind`` modes:
unlike timings, they do not move with other load on the machine."""
from __future__ import annotations

import os
import re
import subprocess
import sys


def start(module_args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m <module_args>`` under callgrind (no output file), with ``env`` added to
    this process's environment; read its total with :func:`total`."""
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
         *module_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def total(proc: subprocess.Popen[str]) -> int:
    """Wait for a run :func:`start` began; the instructions it executed."""
    _, err = proc.communicate()
    found = re.search(r"Collected : (\d+)", err)
    if proc.returncode or found is None:
        raise RuntimeError(f"valgrind run failed: {err[-2000:]}")
    return int(found.group(1))
