"""The mypyc-compiled engine core: which modules are compiled and the stale-build guard.

``make build`` runs ``python -m matcher.native``, which compiles :data:`COMPILED` with mypyc
(the extension modules sit next to their sources and are git-ignored) and records the sha256 of
each source it compiled in :data:`STAMP`. Python imports an extension module in preference to
the ``.py`` beside it, so a compiled module ends with a call of :func:`use_source_if_stale`:
when a compiled source no longer matches the stamp (edited since the build, or no stamp at
all), it warns and swaps the source's definitions in, so an edit is never shadowed by an old
build. ``make build`` rebuilds
whenever a source is newer than the stamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types
import warnings
from pathlib import Path
from typing import Any

COMPILED = ("matcher/orders.py", "matcher/book.py", "matcher/risk.py", "matcher/ledger.py",
            "matcher/engine.py", "matcher/framing.py")
_ROOT = Path(__file__).resolve().parent.parent
STAMP = _ROOT / "matcher" / "native.stamp"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build() -> None:
    """Compile :data:`COMPILED` in place (run from the repository root by ``make build``) and
    record their digests. The modules share one support library, ``matcher.native_core__mypyc``,
    kept inside the package so that every way of importing ``matcher`` finds it."""
    from mypyc.build import mypycify
    from setuptools import setup

    lib = _ROOT / "build" / "native-lib"
    shutil.rmtree(lib, ignore_errors=True)  # only this build's modules may be installed
    setup(name="crossbook-native", script_args=["build_ext", "--build-lib", str(lib)],
          ext_modules=mypycify(list(COMPILED), group_name="matcher.native_core"))
    built = {so.name for so in (lib / "matcher").glob("*.so")}
    # rename into place: a running process keeps its mapping of the old file (overwriting a
    # mapped extension module in place would crash it)
    for name in built:
        tmp = _ROOT / "matcher" / (name + ".tmp")
        shutil.copyfile(lib / "matcher" / name, tmp)
        os.replace(tmp, _ROOT / "matcher" / name)
    # a module no longer compiled must not keep an old build next to its source
    for so in (_ROOT / "matcher").glob("*.so"):
        if so.name not in built:
            so.unlink()
    write_stamp()


def write_stamp() -> None:
    """Record the digests of the sources just compiled (called by ``make build``)."""
    STAMP.write_text(json.dumps({p: _digest(_ROOT / p) for p in COMPILED}, indent=1) + "\n")


def stale() -> bool:
    """True unless every compiled source still has the digest recorded at build time. The
    modules are compiled together (they share native classes), so one edited source means
    none of the build may be used."""
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return True
    return set(stamp) != set(COMPILED) or any(stamp[p] != _digest(_ROOT / p) for p in COMPILED)


def is_compiled(module_file: str) -> bool:
    """True when ``module_file`` (a module's ``__file__``) is an extension module."""
    return not module_file.endswith(".py")


def use_source_if_stale(name: str, module_file: str, namespace: dict[str, Any]) -> bool:
    """Called at the end of each compiled module with its ``globals()``. When the module is a
    compiled build and a compiled source changed since ``make build`` (or the module is no
    longer compiled at all), run the source and replace the module's namespace with the
    source's definitions; returns True then."""
    rel = name.replace(".", "/") + ".py"
    # a build of a module that is no longer in COMPILED is always stale
    if not is_compiled(module_file) or (rel in COMPILED and not stale()):
        return False
    src = _ROOT / rel
    warnings.warn(f"{', '.join(COMPILED)} changed since they were compiled: running the "
                  f"sources ({rel} now; make build recompiles them)", RuntimeWarning,
                  stacklevel=2)
    # run the source as module ``name`` (msgspec resolves annotations through sys.modules, and
    # an extension module is only registered there once its init returns); with __file__
    # naming the source, the source's own call of this function is a no-op
    mod = types.ModuleType(name)
    mod.__file__ = str(src)
    mod.__package__ = name.rpartition(".")[0]
    before = sys.modules.get(name)
    sys.modules[name] = mod
    try:
        exec(compile(src.read_text(), str(src), "exec"), mod.__dict__)  # noqa: S102 - our source
    finally:
        if before is None:
            del sys.modules[name]
        else:
            sys.modules[name] = before
    namespace.update({k: v for k, v in mod.__dict__.items() if k != "__builtins__"})
    return True


if __name__ == "__main__":
    build()
