"""The mypyc build of the engine core: the tests run against it, and it never shadows an edit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import matcher.book
import matcher.orders
from matcher import native

ROOT = Path(native.__file__).resolve().parent.parent


def test_tests_run_against_the_compiled_build() -> None:
    # make build compiles these; a missing or stale build means the tests ran the sources
    assert native.is_compiled(matcher.book.__file__), "run make build"
    assert native.is_compiled(matcher.orders.__file__), "run make build"
    assert not native.stale()
    assert not hasattr(matcher.book.OrderBook.place, "__code__")  # a native method


def _copy_build(dst: Path) -> None:
    (dst / "matcher").mkdir()
    for p in (ROOT / "matcher").iterdir():
        if p.suffix in (".py", ".so") or p.name == "native.stamp":
            shutil.copy(p, dst / "matcher" / p.name)


def _probe(root: Path) -> list[str]:
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "import matcher.book as b, matcher.orders as o\n"
            "print(b.__file__.endswith('.so'), hasattr(b.OrderBook.place, '__code__'),"
            " b.EDITED, o.Order(1, 'a', 0, True, 10, 10).bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(root)})
    return out.stdout.split()


def test_edited_source_is_not_shadowed_by_a_stale_build(tmp_path: Path) -> None:
    _copy_build(tmp_path)
    book = tmp_path / "matcher" / "book.py"
    book.write_text(book.read_text() + "\nEDITED = 'source'\n")
    # the compiled module is still the one Python imports, but the edited source's
    # definitions replace its namespace (Python functions, the new name)
    assert _probe(tmp_path) == ["True", "True", "source", "0"]


def test_a_build_of_a_module_no_longer_compiled_runs_its_source() -> None:
    # e.g. an old matcher/journal.*.so left from a build that compiled the journal too
    assert "matcher/journal.py" not in native.COMPILED
    ns: dict[str, object] = {"__name__": "matcher.journal"}
    with pytest.warns(RuntimeWarning, match="running the sources"):
        assert native.use_source_if_stale("matcher.journal",
                                          str(ROOT / "matcher" / "journal.orphan.so"), ns)
    assert callable(ns["recover"]) and ns["__name__"] == "matcher.journal"
    # a fresh build of a compiled module keeps its own definitions
    assert not native.use_source_if_stale("matcher.book", matcher.book.__file__, {})
