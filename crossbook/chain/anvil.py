"""Run a local anvil node as a child process (the embedded default chain)."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from crossbook.paths import tool

# anvil's default mnemonic yields these well-known dev keys; they are public and only ever fund a
# local chain.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def free_port() -> int:
    """Ask the kernel for an unused loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_call(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One blocking JSON-RPC call; used where pulling in web3 would be overkill."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class AnvilNode:
    """A running anvil; `stop()` (or the context manager) terminates it."""

    port: int = 0
    block_time: float | None = None
    gas_limit: int | None = None
    chain_id: int = 31337
    accounts: int = 10
    state_file: Path | None = None
    code_size_limit: int | None = None
    # refuse transactions above 2^24 gas, as Osaka chains do (EIP-7825; anvil leaves it off)
    tx_gas_cap: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _cache_dir: str | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """HTTP JSON-RPC endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Websocket JSON-RPC endpoint (anvil serves both on one port)."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "AnvilNode":
        """Start anvil and block until it answers JSON-RPC."""
        if not self.port:
            self.port = free_port()
        cmd = [
            tool("anvil"), "--host", "127.0.0.1", "--port", str(self.port),
            "--chain-id", str(self.chain_id), "--accounts", str(self.accounts),
            "--mnemonic", DEV_MNEMONIC, "--silent",
        ]
        # anvil spills old block states to disk (up to ~1.2 GB per long run) and leaves them
        # behind when it stops; a directory of this node's own is removed in stop()
        self._cache_dir = tempfile.mkdtemp(prefix="crossbook-anvil-cache-")
        cmd += ["--cache-path", self._cache_dir]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.gas_limit:
            cmd += ["--gas-limit", str(self.gas_limit)]
        if self.code_size_limit:
            cmd += ["--code-size-limit", str(self.code_size_limit)]
        if self.tx_gas_cap:
            cmd += ["--enable-tx-gas-limit"]
        if self.state_file is not None:
            # --state loads the file if present and dumps to it on exit, so a restart keeps the chain.
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_file), "--state-interval", "5"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                rc = self.proc.returncode
                self.stop()
                raise RuntimeError(f"anvil exited with {rc}: {err}")
            try:
                rpc_call(self.url, "eth_chainId", timeout=0.5)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        """Stop anvil with SIGINT (its Ctrl-C path dumps the state file), then reap it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def __enter__(self) -> "AnvilNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
