"""docker-compose.yml is validated without a docker engine: every service's command is a real
`crossbook` subcommand (parsed with the real argparse parser), host ports are unique, every
depends_on target exists (with a condition compose knows), and every environment variable a
service sets is one its command reads (its --help names it, as every flag with an environment
fallback does)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from crossbook.cli import build_parser
from crossbook.paths import REPO_ROOT
from tests.compose_yaml import load_compose

COMPOSE = REPO_ROOT / "docker-compose.yml"
EXPECTED = {"anvil", "deploy", "matcher", "relayer", "watcher", "keeper", "feeder", "funding", "mm1", "mm2",
            "dashboard"}
# read by every process rather than by one command's flags
GLOBAL_ENV = {"CROSSBOOK_HOME", "CROSSBOOK_LOG_FORMAT", "CROSSBOOK_LOG_LEVEL", "PYTHONUNBUFFERED"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_compose(str(COMPOSE))
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _crossbook_argv(svc: dict[str, Any]) -> list[str] | None:
    """The crossbook arguments of a service (None when its entrypoint is not crossbook)."""
    if "entrypoint" in svc:
        return None
    cmd = svc.get("command")
    assert isinstance(cmd, list), "commands are lists (no shell parsing)"
    return [str(c) for c in cmd]


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def test_every_process_is_a_service(compose: dict[str, Any]) -> None:
    assert set(_services(compose)) == EXPECTED
    assert "state" in compose.get("volumes", {})


def test_commands_resolve_to_crossbook_subcommands(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in _services(compose).items():
        argv = _crossbook_argv(svc)
        if argv is None:
            # anvil: an npm-installed binary inside the image (/app is the repository root)
            entry = svc["entrypoint"][0]
            assert entry.startswith("/app/")
            assert (REPO_ROOT / entry.removeprefix("/app/")).exists(), entry
            continue
        for k, v in dict(svc.get("environment") or {}).items():
            monkeypatch.setenv(k, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)))
        args = build_parser().parse_args(argv)  # raises SystemExit on an unknown command or flag
        assert callable(args.func), name


def test_host_ports_unique(compose: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, svc in _services(compose).items():
        for p in svc.get("ports", []):
            host = int(str(p).split(":")[0])
            assert host not in seen, f"port {host} of {name} already used by {seen[host]}"
            seen[host] = name
    assert {8545, 8765, 8080} <= set(seen)


def test_metrics_ports_match_environment(compose: dict[str, Any]) -> None:
    for name, svc in _services(compose).items():
        env = dict(svc.get("environment") or {})
        if "CROSSBOOK_METRICS_PORT" in env:
            port = str(env["CROSSBOOK_METRICS_PORT"])
            assert any(str(p).split(":")[1] == port for p in svc.get("ports", [])), name
            assert env.get("CROSSBOOK_METRICS_HOST") == "0.0.0.0", f"{name}: /metrics unreachable from outside"


def test_depends_on_targets_exist(compose: dict[str, Any]) -> None:
    services = _services(compose)
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for target, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert target in services, f"{name} depends on unknown {target}"
            assert target != name
            cond = (spec or {}).get("condition", "service_started")
            assert cond in conditions, cond
            if cond == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has no check"
    # the one-shot deploy must finish before anything reads the deployment file
    for name in EXPECTED - {"anvil", "deploy"}:
        chain = set()
        todo = [name]
        while todo:
            n = todo.pop()
            for d in (services[n].get("depends_on") or {}):
                if d not in chain:
                    chain.add(d)
                    todo.append(d)
        assert "deploy" in chain, f"{name} may start before the contracts are deployed"


def test_environment_is_read_by_the_command(compose: dict[str, Any]) -> None:
    for name, svc in _services(compose).items():
        argv = _crossbook_argv(svc)
        if argv is None:
            assert not svc.get("environment"), "anvil is configured by flags"
            continue
        text = _help(argv[:1] if argv[0] != "oracle" else argv[:2])
        for var in dict(svc.get("environment") or {}):
            assert var in GLOBAL_ENV or f"${var}" in text, f"{name} sets {var}, which `crossbook {argv[0]}` never reads"


def test_dockerfile_builds_what_compose_runs() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "npm ci" in text and 'ENTRYPOINT ["crossbook"]' in text
    for d in ("crossbook", "matcher", "settlement", "keeper", "contracts", "examples"):
        assert f"COPY {d} " in text, d
    assert Path(REPO_ROOT / "package-lock.json").exists()
