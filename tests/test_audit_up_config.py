"""`crossbook up` misconfigured: each mistake is one line naming what is wrong, exit code 1.

Before, an unreachable or malformed ``--rpc-url``, a corrupt ``deployment.json`` or
``secrets.json`` and a deploying key without gas ended in a Python traceback; a relayer key
without the operator role or without gas (and a keeper or feeder key without gas) came up
"ready" and then failed at its first transaction, restarted in a loop, visible only in its log.
Everything here runs the real CLI against a real anvil.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from eth_account import Account

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.devkeys import KEEPER, OPERATOR, dev_address, dev_key
from crossbook.paths import REPO_ROOT
from tests.supervised import FREE_PORTS

pytestmark = pytest.mark.timeout(300)

UNFUNDED = "0x" + "42" * 32


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode().start()
    try:
        yield node
    finally:
        node.stop()


def _up(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CROSSBOOK_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    for var in ("CROSSBOOK_OPERATOR_KEY", "CROSSBOOK_KEEPER_KEY", "CROSSBOOK_FEEDER_KEY", "CROSSBOOK_ADMIN_KEY",
                "CROSSBOOK_OPERATOR"):
        if env is None or var not in env:
            full.pop(var, None)
    return subprocess.run([sys.executable, "-m", "crossbook.cli", "up", *FREE_PORTS, *args], env=full,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)


def _refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "Crossbook is up" not in out and "starting services" not in out, out[-3000:]
    for n in needles:
        assert n in out, f"{n!r} not in:\n{out[-3000:]}"


@pytest.fixture(scope="module")
def deployed(anvil: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("deployed")
    proc = _up(home, "--rpc-url", anvil.url, "--deploy-only")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return home


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "not-a-url"])
def test_unreachable_or_malformed_rpc_url(tmp_path: Path, url: str) -> None:
    _refused(_up(tmp_path, "--rpc-url", url), f"cannot reach the chain at {url} (--rpc-url)")


def test_deploying_key_without_gas(anvil: AnvilNode, tmp_path: Path) -> None:
    addr = Account.from_key(UNFUNDED).address
    _refused(_up(tmp_path, "--rpc-url", anvil.url, env={"CROSSBOOK_ADMIN_KEY": UNFUNDED}),
             f"the deployer's account {addr} ($CROSSBOOK_ADMIN_KEY) has no gas")
    assert not (tmp_path / "deployment.json").exists()


def test_corrupt_deployment_and_secrets_files(anvil: AnvilNode, deployed: Path, tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "deployment.json").write_text("not json")
    _refused(_up(home, "--rpc-url", anvil.url), f"{home / 'deployment.json'} is not a deployment file")
    (home / "deployment.json").write_text((deployed / "deployment.json").read_text())
    (home / "secrets.json").write_text('{"operator_token": "x"}')
    _refused(_up(home, "--rpc-url", anvil.url), f"{home / 'secrets.json'} is unreadable")


def test_relayer_key_without_the_operator_role(anvil: AnvilNode, deployed: Path) -> None:
    keeper = dev_address(KEEPER)
    _refused(_up(deployed, "--rpc-url", anvil.url, env={"CROSSBOOK_OPERATOR_KEY": dev_key(KEEPER)}),
             f"the relayer's account {keeper} ($CROSSBOOK_OPERATOR_KEY) does not hold OPERATOR_ROLE",
             f"granted to {dev_address(OPERATOR)}")


@pytest.mark.parametrize("service,var", [("relayer", "CROSSBOOK_OPERATOR_KEY"), ("keeper", "CROSSBOOK_KEEPER_KEY"),
                                         ("feeder", "CROSSBOOK_FEEDER_KEY")])
def test_signing_keys_without_gas(anvil: AnvilNode, deployed: Path, service: str, var: str) -> None:
    addr = Account.from_key(UNFUNDED).address
    _refused(_up(deployed, "--rpc-url", anvil.url, env={var: UNFUNDED}),
             f"the {service}'s account {addr} (${var}) has no gas")


def test_a_key_that_is_no_key(anvil: AnvilNode, deployed: Path) -> None:
    _refused(_up(deployed, "--rpc-url", anvil.url, env={"CROSSBOOK_OPERATOR_KEY": "0xnothex"}),
             "the relayer's key ($CROSSBOOK_OPERATOR_KEY) is not a private key")
