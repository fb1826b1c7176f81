"""`crossbook up`: the whole stack as supervised child processes, one command.

Order of events:

1. anvil (unless ``--rpc-url``), with ``--state`` so the chain survives a restart;
2. the contracts (reused when the saved deployment is still on the chain), test collateral minted
   to the demo accounts and, once per deployment, deposited for them, the keeper's own
   sub-account funded and the insurance fund seeded;
3. the services, each ``python -m crossbook.cli <command>`` in its own session with its output in
   ``<home>/logs/<name>.log``: matcher, relayer, watcher, keeper, feeder, funding, ``mm --bot 1``,
   ``mm --bot 2``, dashboard. Each is started after the previous one reported ready
   (``crossbook_ready`` on its /metrics, or the matcher's ``status`` op). ``mm`` and
   ``dashboard`` are started only if this CLI has those subcommands.

Then it supervises: a child that exits is restarted after a backoff (1 s doubling to 30 s,
reset after a minute of uptime). Ctrl-C / SIGTERM stops everything in reverse dependency order
(bots and dashboard, keeper, feeder and funding, watcher and relayer, matcher) with SIGTERM, SIGKILL after
a grace period, and anvil last with SIGINT so it dumps its state file. Children run in their own
sessions, so a terminal's Ctrl-C reaches only the supervisor (which orders the shutdown), and
each child gets SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG): no
orphans either way.

``<home>/stack.json`` describes the running stack (pids, ports, URLs) while it is up.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from crossbook.chain.anvil import DEV_MNEMONIC, free_port, rpc_call
from crossbook.paths import ANVIL_STATE_FILE, REPO_ROOT, state_dir, tool

log = logging.getLogger("crossbook.supervisor")

DEFAULT_ANVIL_PORT = 8545
DEFAULT_MATCHER_PORT = 8765
DEFAULT_DASHBOARD_PORT = 8080
DEFAULT_METRICS_BASE = 9100
# metrics port = base + offset (keeper/feeder/matcher/... defaults in their own modules agree)
METRICS_OFFSET = {"matcher": 1, "relayer": 2, "watcher": 3, "keeper": 4, "feeder": 5, "mm1": 6, "mm2": 7,
                  "dashboard": 8, "funding": 9}
# shutdown waves, first to last; anvil is always after the last wave
STOP_WAVES = (("dashboard", "mm1", "mm2", "keeper", "feeder", "funding"), ("watcher", "relayer"), ("matcher",))
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # uptime after which a crash counts as new (backoff resets)
STOP_GRACE_S = 20.0


def add_up_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``crossbook up`` (every port flag accepts 0: pick a free port)."""
    p.add_argument("--rpc-url", default=None,
                   help="run against this existing chain instead of starting anvil (deploys there unless "
                        "the saved deployment is on it; keys from $CROSSBOOK_ADMIN_KEY, "
                        "$CROSSBOOK_OPERATOR_KEY, $CROSSBOOK_KEEPER_KEY, $CROSSBOOK_FEEDER_KEY)")
    p.add_argument("--port", type=int, default=DEFAULT_ANVIL_PORT, help="anvil port (default 8545)")
    p.add_argument("--home", default=None, help="state directory (default .crossbook, or $CROSSBOOK_HOME)")
    p.add_argument("--fresh", action="store_true",
                   help="discard saved chain state, deployment and journal, and start over")
    p.add_argument("--matcher-port", type=int, default=DEFAULT_MATCHER_PORT, help="matcher websocket port")
    p.add_argument("--dashboard-port", type=int, default=DEFAULT_DASHBOARD_PORT, help="dashboard http port")
    p.add_argument("--metrics-port-base", type=int, default=DEFAULT_METRICS_BASE,
                   help="service /metrics ports are base+1 (matcher) .. base+9 (funding); 0: free ports")
    p.add_argument("--without", action="append", default=[], metavar="SERVICE",
                   help="do not start SERVICE (repeatable): relayer, watcher, keeper, feeder, funding, mm1, mm2, "
                        "dashboard")
    p.add_argument("--chain-only", action="store_true",
                   help="only the chain and the contracts (the services are started by hand)")
    p.add_argument("--deploy-only", action="store_true",
                   help="deploy (or verify) the contracts and demo funds on --rpc-url, write the deployment "
                        "file and exit (docker-compose's one-shot `deploy` service)")
    p.add_argument("--ready-timeout", type=float, default=90.0, help="seconds a service may take to be ready")
    p.add_argument("--block-time", type=int, default=0,
                   help="anvil: seconds per block (0: a block per tx, plus an empty block every second)")


# ============================================================================ children


def _pdeathsig() -> None:
    """In the child before exec: own session (a terminal Ctrl-C reaches only the supervisor)
    and SIGTERM when the supervisor dies, so a killed supervisor leaves no orphans."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - non-Linux: orphans are possible if the supervisor is killed
        pass


@dataclass
class Service:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True
    stop_signal: int = signal.SIGTERM
    core: bool = True  # a core service that never becomes ready aborts `up`
    urls: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float | None = None
    is_ready: bool = False

    @property
    def pid(self) -> int | None:
        """The running child's pid."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Starts, watches, restarts and stops :class:`Service` children."""

    def __init__(self, home: Path, out: TextIO | None = None) -> None:
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, Service] = {}
        self.out = out or sys.stdout
        self.stopping = False

    def say(self, msg: str) -> None:
        """A line for the operator (and the supervisor's JSON log)."""
        print(msg, file=self.out, flush=True)
        log.info(msg)

    def spawn(self, svc: Service) -> None:
        """Start (or restart) ``svc``; its stdout and stderr append to its log file."""
        svc.log_path = self.logs / f"{svc.name}.log"
        with open(svc.log_path, "ab") as fh:
            fh.write(f"\n===== {svc.name} start {time.strftime('%Y-%m-%dT%H:%M:%S')} "
                     f"(restart {svc.restarts}) {' '.join(svc.argv)}\n".encode())
            fh.flush()
            svc.proc = subprocess.Popen(svc.argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                        env={**os.environ, **svc.env}, cwd=str(REPO_ROOT),
                                        preexec_fn=_pdeathsig)
        svc.started_at = time.monotonic()
        svc.is_ready = False
        svc.restart_at = None
        self.services[svc.name] = svc
        log.info("started %s pid %d", svc.name, svc.proc.pid, extra={"service_name": svc.name})

    def wait_ready(self, svc: Service, timeout: float) -> bool:
        """Block (showing progress) until ``svc.ready()``; False if it exited or timed out."""
        from crossbook.commands.common import Progress

        prog = Progress(f"  {svc.name}", self.out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if svc.proc is None or svc.proc.poll() is not None:
                prog.done(f"exited with {svc.proc.returncode if svc.proc else '?'}; see {svc.log_path}")
                return False
            try:
                ok = svc.ready()
            except Exception:  # noqa: BLE001 - a probe that cannot connect yet
                ok = False
            if ok:
                svc.is_ready = True
                prog.done(f"ready (pid {svc.proc.pid})")
                return True
            prog.update("starting")
            time.sleep(0.1)
        prog.done("not ready in time" if not self.stopping else "interrupted")
        return False

    def tail(self, svc: Service, n: int = 15) -> str:
        """The last lines of a service's log (for error messages)."""
        if svc.log_path is None or not svc.log_path.exists():
            return ""
        return "\n".join(svc.log_path.read_text(errors="replace").splitlines()[-n:])

    def last_error(self, svc: Service, rc: int) -> str:
        """The last line ``svc`` wrote when it says why it exited with ``rc``: an ERROR/CRITICAL
        record, or a plain line (a SystemExit message, a traceback's exception); "" otherwise."""
        if svc.name == "anvil" or rc <= 0:
            return ""  # anvil logs requests, not reasons; a signal (rc < 0) came from outside
        lines = [ln.strip() for ln in self.tail(svc, 5).splitlines() if ln.strip()]
        if not lines or lines[-1].startswith("====="):  # nothing since the start banner
            return ""
        try:
            rec = json.loads(lines[-1])
        except ValueError:
            return lines[-1][:300]
        if isinstance(rec, dict) and rec.get("level") in ("ERROR", "CRITICAL"):
            return str(rec.get("msg", ""))[:300]
        return ""

    def check(self) -> None:
        """One supervision pass: schedule restarts of exited children, perform due ones."""
        now = time.monotonic()
        for svc in list(self.services.values()):
            if svc.proc is None or self.stopping:
                continue
            rc = svc.proc.poll()
            if rc is None:
                if not svc.is_ready:
                    try:
                        svc.is_ready = bool(svc.ready())
                    except Exception:  # noqa: BLE001
                        pass
                continue
            if svc.restart_at is None:
                if now - svc.started_at > STABLE_AFTER_S:
                    svc.backoff_s = 1.0
                svc.restart_at = now + svc.backoff_s
                why = self.last_error(svc, rc)
                self.say(f"{svc.name} exited with {rc}{': ' + why if why else ''}; restarting in "
                         f"{svc.backoff_s:.0f}s (log {svc.log_path})")
                svc.backoff_s = min(BACKOFF_MAX_S, svc.backoff_s * 2)
            elif now >= svc.restart_at:
                svc.restarts += 1
                self.spawn(svc)
                self.say(f"{svc.name} restarted (pid {svc.pid}, restart #{svc.restarts})")

    def stop_one(self, svc: Service) -> None:
        """Signal ``svc`` (its stop signal) without waiting."""
        if svc.proc is not None and svc.proc.poll() is None:
            try:
                svc.proc.send_signal(svc.stop_signal)
            except ProcessLookupError:
                pass

    def reap(self, svcs: list[Service], grace: float = STOP_GRACE_S) -> None:
        """Wait for ``svcs`` to exit; SIGKILL whoever outlives ``grace``."""
        deadline = time.monotonic() + grace
        for svc in svcs:
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{svc.name} did not stop in {grace:.0f}s; killing it")
                svc.proc.kill()
                svc.proc.wait()

    def stop_all(self, waves: tuple[tuple[str, ...], ...] = STOP_WAVES) -> None:
        """Ordered shutdown: each wave in parallel, waves in order, then whatever is left
        (anvil) last."""
        self.stopping = True
        done: set[str] = set()
        for wave in [*waves, tuple(n for n in self.services if n not in {x for w in waves for x in w})]:
            svcs = [self.services[n] for n in wave if n in self.services and n not in done]
            if not svcs:
                continue
            running = [s for s in svcs if s.pid is not None]
            if running:
                self.say(f"stopping {', '.join(s.name for s in running)} ...")
            for s in svcs:
                self.stop_one(s)
            self.reap(svcs)
            done.update(s.name for s in svcs)


# ============================================================================ probes


def http_ok(url: str, timeout: float = 1.0) -> str | None:
    """The body of a 200 answer at ``url``, or None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status == 200:
                return str(r.read().decode(errors="replace"))
    except OSError:
        return None
    return None


def metrics_ready(port: int, service: str) -> bool:
    """The service's /metrics reports ``crossbook_ready{service="..."} 1``."""
    body = http_ok(f"http://127.0.0.1:{port}/metrics")
    return bool(body) and re.search(rf'^crossbook_ready\{{service="{service}"\}} 1(\.0)?$', body or "",
                                    re.M) is not None


def matcher_status(url: str) -> dict[str, object] | None:
    """The result of the matcher's ``status`` op (None if it refused)."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=1, close_timeout=1) as ws:
        ws.recv(timeout=2)  # hello
        ws.send(json.dumps({"op": "status", "id": 1}))
        while True:
            f = json.loads(ws.recv(timeout=2))
            if f.get("type") == "response":
                return dict(f["result"]) if f.get("ok") else None


def matcher_ready(url: str) -> bool:
    """The matcher answers its ``status`` op."""
    return matcher_status(url) is not None


def saved_head(state_file: Path) -> int | None:
    """The last block anvil saved in its state file (what a restarted anvil resumes from), or
    None when there is no readable state file."""
    try:
        return int(json.loads(state_file.read_text())["best_block_number"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def chain_behind_journal(head: int | None, state_file: Path, matcher_url: str) -> str | None:
    """Why the chain anvil resumes from ``state_file`` (saved up to block ``head``) cannot carry
    on the matcher's journal, or None when it can.

    anvil saves its state every few seconds and on SIGINT; killed in between, it resumes from
    an older block. The matcher has already applied the chain events of the lost blocks (its
    chain cursor is past the saved head), and neither it nor the watcher can take them back:
    settlements it counts are gone from the chain (the relayer is refused the items as settled,
    so settlement stalls) and new events in re-mined block numbers would be skipped."""
    if head is None:
        return None
    try:
        status = matcher_status(matcher_url)
    except Exception:  # noqa: BLE001 - no matcher to ask: nothing applied that could be lost
        return None
    cursor = status.get("chain_cursor") if status else None
    if not isinstance(cursor, list) or not cursor or int(cursor[0]) <= head:
        return None
    return (f"the chain anvil saved ({state_file}) ends at block {head}, but the matcher has applied "
            f"chain events up to block {cursor[0]}: anvil stopped without saving its last blocks "
            "(it saves every 5 s and on Ctrl-C), so settlements and deposits the journal counts are "
            "no longer on the chain and settlement cannot resume. Start over with `crossbook up "
            "--fresh` (or put back a state file saved after that block)")


def chain_ready(url: str) -> bool:
    """The node answers JSON-RPC."""
    rpc_call(url, "eth_chainId", timeout=1.0)
    return True


def port_busy(port: int) -> bool:
    """Something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def available_commands() -> set[str]:
    """Subcommands the CLI registry has (so `up` works before `mm` / `dashboard` land)."""
    from crossbook.cli import build_parser

    p = build_parser()
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return set(a.choices)
    return set()


# ============================================================================ bootstrap


def read_secrets(home: Path) -> dict[str, str]:
    """The operator and stream tokens `up` keeps in ``<home>/secrets.json`` (OSError when
    absent; ValueError, TypeError or KeyError when damaged)."""
    tok = json.loads((home / "secrets.json").read_text())
    return {k: str(tok[k]) for k in ("operator_token", "stream_token")}


def _secrets(home: Path) -> dict[str, str]:
    """Operator and stream tokens, generated once per state dir (a restart keeps them)."""
    from crossbook.stack import SetupError

    path = home / "secrets.json"
    if path.exists():
        try:
            return read_secrets(home)
        except (ValueError, TypeError, KeyError) as err:
            raise SetupError(f"{path} is unreadable ({err!r}); remove it and `up` writes new tokens") from err
    tok = {"operator_token": secrets.token_hex(16), "stream_token": secrets.token_hex(16)}
    path.write_text(json.dumps(tok))
    path.chmod(0o600)
    return tok


def journal_behind_chain(w3: object, dep: object, matcher_url: str, journal_dir: Path) -> str | None:
    """Why the matcher's journal cannot be the one this chain was settled from, or None.

    Every item is journaled before it is streamed to the relayer, so an intact journal has
    sequenced at least every item the contract settled. Fewer means the journal was lost or
    replaced by an older copy: the relayer would wait for the chain's next seq forever while
    the matcher numbers new fills from its own, and the chain's settled fills would be missing
    from every position the matcher reports."""
    from web3 import Web3

    from crossbook.chain.clearinghouse import ClearinghouseClient
    from crossbook.chain.deploy import Deployment

    assert isinstance(w3, Web3) and isinstance(dep, Deployment)
    settled = ClearinghouseClient(w3, dep).next_seq() - 1
    status = matcher_status(matcher_url)
    matched = int(str(status.get("matched_seq", 0))) if status else 0
    if settled <= matched:
        return None
    return (f"the chain has settled items up to seq {settled}, but the matcher's journal ({journal_dir}) "
            f"has sequenced only {matched}: it is missing or older than the chain. Put the journal back, "
            "or start over with `crossbook up --fresh`")


def check_signers(w3: object, dep: object, rpc_url: str, without: set[str]) -> None:
    """Before the services start: every key a started service signs with is a key, holds gas,
    and the relayer's holds the clearinghouse's OPERATOR_ROLE. Each would otherwise come up
    ready and then fail (and be restarted) at its first transaction, visible only in its log."""
    from web3 import Web3

    from crossbook.chain.clearinghouse import ClearinghouseClient
    from crossbook.chain.deploy import Deployment
    from crossbook.chain.devkeys import KEEPER, OPERATOR, dev_key
    from crossbook.commands.common import resolve_key
    from crossbook.commands.feeder import FEEDER_DEV_INDEX
    from crossbook.stack import SetupError, funded_address

    assert isinstance(w3, Web3) and isinstance(dep, Deployment)
    signers = {"relayer": ("CROSSBOOK_OPERATOR_KEY", os.environ.get("CROSSBOOK_OPERATOR_KEY", dev_key(OPERATOR))),
               "keeper": ("CROSSBOOK_KEEPER_KEY", resolve_key(os.environ.get("CROSSBOOK_KEEPER_KEY"), KEEPER)),
               "feeder": ("CROSSBOOK_FEEDER_KEY", resolve_key(os.environ.get("CROSSBOOK_FEEDER_KEY"),
                                                              FEEDER_DEV_INDEX))}
    for service, (var, key) in signers.items():
        if service in without:
            continue
        address = funded_address(w3, key, f"the {service}", var, rpc_url)
        if service == "relayer":
            ch = ClearinghouseClient(w3, dep).contract
            if not ch.functions.hasRole(Web3.keccak(text="OPERATOR_ROLE"), address).call():
                raise SetupError(f"the relayer's account {address} ($CROSSBOOK_OPERATOR_KEY) does not hold "
                                 f"OPERATOR_ROLE on the clearinghouse {dep.clearinghouse} (granted to "
                                 f"{dep.operator} at deployment): every settle transaction would revert")


def bootstrap_funds(w3: object, dep: object, say: Callable[[str], None]) -> None:
    """Once per deployment: demo accounts deposit part of their minted test collateral, the
    keeper's sub-account gets margin to absorb liquidated positions, the insurance fund a seed."""
    from web3 import Web3

    from crossbook.chain.clearinghouse import ClearinghouseClient
    from crossbook.chain.deploy import Deployment
    from crossbook.chain.devkeys import ADMIN, FIRST_USER, KEEPER, dev_key
    from crossbook.config import USD
    from crossbook.stack import DEMO_USERS

    assert isinstance(w3, Web3) and isinstance(dep, Deployment)
    client = ClearinghouseClient(w3, dep)
    usdc = client.token("USDC")
    for i in range(FIRST_USER, FIRST_USER + DEMO_USERS):
        s = client.sender(dev_key(i))
        amount = 500_000 * USD
        s.transact(usdc.functions.approve(client.contract.address, amount))
        s.transact(client.contract.functions.deposit(s.address, 0, 0, amount))
    keeper = client.sender(dev_key(KEEPER))
    client.mint_and_deposit(keeper, keeper.address, 0, "USDC", 2_000_000 * USD)
    admin = client.sender(dev_key(ADMIN))
    admin.transact(usdc.functions.mint(admin.address, 250_000 * USD))
    admin.transact(usdc.functions.approve(client.contract.address, 250_000 * USD))
    admin.transact(client.contract.functions.depositInsurance(250_000 * USD))
    say(f"deposited 500,000 USDC for {DEMO_USERS} demo accounts, 2,000,000 USDC for the keeper, "
        "250,000 USDC into the insurance fund")


# ============================================================================ up


@dataclass
class Ports:
    """Where everything listens."""

    anvil: int
    matcher: int
    dashboard: int
    metrics: dict[str, int]


def _pick(port: int) -> int:
    return port or free_port()


def plan_ports(args: argparse.Namespace) -> Ports:
    """Resolve the port flags (0 = a free port)."""
    base = args.metrics_port_base
    metrics = {n: (base + off if base else free_port()) for n, off in METRICS_OFFSET.items()}
    return Ports(anvil=_pick(args.port), matcher=_pick(args.matcher_port), dashboard=_pick(args.dashboard_port),
                 metrics=metrics)


def build_services(home: Path, rpc_url: str, ports: Ports, tokens: dict[str, str], without: set[str],
                   have: set[str], say: Callable[[str], None]) -> list[Service]:
    """The service children in start order (skipping ``without`` and missing subcommands)."""
    from crossbook.chain.devkeys import OPERATOR, dev_key

    matcher_url = f"ws://127.0.0.1:{ports.matcher}"
    common = {
        "PYTHONPATH": str(REPO_ROOT), "CROSSBOOK_HOME": str(home),
        "CROSSBOOK_DEPLOYMENT": str(home / "deployment.json"), "CROSSBOOK_RPC_URL": rpc_url,
        "CROSSBOOK_MATCHER_URL": matcher_url, "CROSSBOOK_OPERATOR_TOKEN": tokens["operator_token"],
        "CROSSBOOK_STREAM_TOKEN": tokens["stream_token"],
        "CROSSBOOK_OPERATOR_KEY": os.environ.get("CROSSBOOK_OPERATOR_KEY", dev_key(OPERATOR)),
        "CROSSBOOK_JOURNAL_DIR": str(home / "matcher"), "CROSSBOOK_LOG_FORMAT": "json",
        "CROSSBOOK_DASHBOARD_PORT": str(ports.dashboard), "PYTHONUNBUFFERED": "1",
    }
    py = [sys.executable, "-m", "crossbook.cli"]

    def svc(name: str, argv: list[str], core: bool = True, ready: Callable[[], bool] | None = None,
            urls: dict[str, str] | None = None) -> Service:
        mport = ports.metrics[name]
        env = {**common, "CROSSBOOK_METRICS_PORT": str(mport)}
        service_label = "mm" if name.startswith("mm") else name
        probe = ready or (lambda: metrics_ready(mport, service_label))
        return Service(name, py + argv, env, probe, core=core,
                       urls={"metrics": f"http://127.0.0.1:{mport}/metrics", **(urls or {})})

    out = [svc("matcher", ["matcher", "--port", str(ports.matcher)], ready=lambda: matcher_ready(matcher_url),
               urls={"ws": matcher_url})]
    for name in ("relayer", "watcher", "keeper", "feeder", "funding"):
        out.append(svc(name, [name]))
    for n in (1, 2):
        out.append(svc(f"mm{n}", ["mm", "--bot", str(n)], core=False,
                       ready=_optional_probe(ports.metrics[f"mm{n}"], "mm", None)))
    dash_url = f"http://127.0.0.1:{ports.dashboard}/"
    out.append(svc("dashboard", ["dashboard"], core=False,
                   ready=_optional_probe(ports.metrics["dashboard"], "dashboard", dash_url), urls={"http": dash_url}))
    kept = []
    for s in out:
        cmd = s.argv[3]
        if s.name in without:
            say(f"  {s.name:<10} skipped (--without)")
        elif cmd not in have:
            say(f"  {s.name:<10} skipped: this crossbook has no `{cmd}` command yet")
            log.warning("subcommand %s missing: %s not started", cmd, s.name)
        else:
            kept.append(s)
    return kept


def _optional_probe(metrics_port: int, label: str, http_url: str | None) -> Callable[[], bool]:
    """Readiness of a service written elsewhere (mm, dashboard): its ready gauge, its page, or
    (it serves no /metrics at all) three seconds alive. A bot whose /metrics answers without
    the gauge set is not quoting yet, so it is not ready."""
    t0 = [0.0]
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    pattern = re.compile(rf'^crossbook_ready\{{service="{label}"\}} 1(\.0)?$', re.M)

    def probe() -> bool:
        if not t0[0]:
            t0[0] = time.monotonic()
        body = http_ok(url)
        if body is not None and pattern.search(body):
            return True
        if http_url and http_ok(http_url):
            return True
        return body is None and time.monotonic() - t0[0] > 3.0 and http_url is None

    return probe


def write_state(home: Path, sup: Supervisor, info: dict[str, object]) -> None:
    """``stack.json``: pids, URLs and ports of the running stack (for tools and tests)."""
    data = dict(info)
    data["supervisor_pid"] = os.getpid()
    data["services"] = {n: {"pid": s.pid, "ready": s.is_ready, "restarts": s.restarts, "urls": s.urls,
                            "log": str(s.log_path)} for n, s in sup.services.items()}
    tmp = home / "stack.json.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(home / "stack.json")


def running_stack(home: Path) -> dict[str, Any] | None:
    """``<home>/stack.json`` if the `up` that wrote it is still running, else None: a supervisor
    killed with SIGKILL cannot remove the file, and tools must not send orders or operator ops to
    the URLs of a stack that is gone (a later `up` on other ports would not be the one they name)."""
    try:
        data = json.loads((home / "stack.json").read_text())
        pid = int(data["supervisor_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid <= 0:  # kill(0 or -1, 0) would ask about a process group, or every process
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, under another user
    except (ProcessLookupError, OverflowError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_up(args: argparse.Namespace) -> int:
    """``crossbook up``: bring everything up, supervise until Ctrl-C / SIGTERM, stop in order."""
    from web3 import Web3

    from crossbook.chain.deploy import Deployment
    from crossbook.logs import JsonFormatter
    from crossbook.stack import SetupError, ensure_deployment, print_deployment

    home = Path(args.home).resolve() if args.home else state_dir()
    home.mkdir(parents=True, exist_ok=True)
    # one `up` per state dir: a second one (free ports do not collide) would run a second anvil
    # dumping into the same state file and a second matcher appending to the same journal,
    # interleaving records that the next recovery finds damaged. The lock goes with the process.
    lock = open(home / "up.lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other = lock.read().strip() or "?"
        lock.close()
        print(f"another `crossbook up` (pid {other}) is running on {home}: stop it first, or use another "
              "--home / $CROSSBOOK_HOME", flush=True)
        return 1
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    # holding the lock, any stack.json is a dead `up`'s (killed with SIGKILL): drop it at once, so
    # that no tool reads the old URLs while this one starts
    (home / "stack.json").unlink(missing_ok=True)
    sup = Supervisor(home)
    fh = logging.FileHandler(sup.logs / "supervisor.log")
    fh.setFormatter(JsonFormatter("supervisor"))
    logging.getLogger().addHandler(fh)
    logging.getLogger().setLevel(logging.INFO)

    stop_requested = [False]

    def on_signal(signum: int, _frame: object) -> None:
        if not stop_requested[0]:
            print(f"\n{signal.Signals(signum).name}: stopping the stack ...", file=sup.out, flush=True)
        stop_requested[0] = True
        sup.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    if args.fresh:
        for f in (ANVIL_STATE_FILE, "deployment.json"):  # stack.json went with the lock above
            (home / f).unlink(missing_ok=True)

        shutil.rmtree(home / "matcher", ignore_errors=True)
        sup.say("--fresh: discarded chain state, deployment and journal")
    ports = plan_ports(args)
    rc = 0
    resume_head: int | None = None
    try:
        if args.rpc_url:
            rpc_url = args.rpc_url
            try:
                chain_ready(rpc_url)
            except Exception as err:  # noqa: BLE001 - refused, unresolvable, not JSON-RPC, bad URL
                sup.say(f"cannot reach the chain at {rpc_url} (--rpc-url): {err}")
                return 1
            sup.say(f"using the chain at {rpc_url}")
        else:
            if port_busy(ports.anvil):
                sup.say(f"port {ports.anvil} is in use (another stack running?); use --port or --rpc-url")
                return 1
            rpc_url = f"http://127.0.0.1:{ports.anvil}"
            # read before anvil starts: it re-saves the file within seconds, with newer blocks
            resume_head = saved_head(home / ANVIL_STATE_FILE)
            cmd = [tool("anvil"), "--host", "127.0.0.1", "--port", str(ports.anvil), "--chain-id", "31337",
                   "--accounts", "10", "--mnemonic", DEV_MNEMONIC, "--gas-limit", "60000000",
                   "--state", str(home / ANVIL_STATE_FILE), "--state-interval", "5"]
            # anvil spills old block states to this cache (up to ~1.2 GB) and never removes it;
            # it only serves the instance that wrote it, so each start begins with an empty one
            cache = home / "anvil-cache"
            shutil.rmtree(cache, ignore_errors=True)
            cmd += ["--cache-path", str(cache)]
            if args.block_time:
                cmd += ["--block-time", str(args.block_time)]
            else:
                # a block per transaction, and an empty one every second when nobody transacts:
                # the watcher and keeper forward only confirmed logs (1 block deep), so without
                # the feeder's steady updates (`--without feeder`) a deposit would never be
                # confirmed and the matcher would never credit it
                cmd += ["--mixed-mining", "--block-time", "1"]
            sup.say(f"starting anvil (state in {home / ANVIL_STATE_FILE})")
            anvil = Service("anvil", cmd, ready=lambda: chain_ready(rpc_url), stop_signal=signal.SIGINT,
                            urls={"rpc": rpc_url})
            sup.spawn(anvil)
            if not sup.wait_ready(anvil, 30):
                sup.say(sup.tail(anvil))
                return 1
        if sup.stopping:
            return 0
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
        dep = ensure_deployment(w3, rpc_url, home, fresh=False)
        if not dep.extra.get("bootstrapped"):
            try:
                bootstrap_funds(w3, dep, sup.say)
                dep.extra["bootstrapped"] = True
                dep.save(home / "deployment.json")
            except Exception as err:  # noqa: BLE001 - e.g. dev keys without gas on a real chain
                sup.say(f"demo funding skipped: {err}")
        dep = Deployment.load(home / "deployment.json")
        info: dict[str, object] = {"rpc_url": rpc_url, "chain_id": dep.chain_id, "home": str(home),
                                   "clearinghouse": dep.clearinghouse, "ports": vars(ports)}
        if args.deploy_only:
            print_deployment(dep, rpc_url)
            sup.say(f"deployment written to {home / 'deployment.json'}")
            return 0
        if args.chain_only:
            print_deployment(dep, rpc_url)
            write_state(home, sup, info)
            sup.say("chain only (--chain-only) — Ctrl-C to stop")
            while not sup.stopping:
                sup.check()
                time.sleep(0.25)
            return 0
        # a taken port would otherwise surface as a child's bind traceback in its log
        wanted = {"matcher websocket (--matcher-port)": ports.matcher,
                  "dashboard (--dashboard-port)": ports.dashboard,
                  **{f"{n} /metrics (--metrics-port-base)": p for n, p in ports.metrics.items()}}
        busy = [f"{port} ({what})" for what, port in wanted.items()
                if what.split()[0] not in args.without and port_busy(port)]
        if busy:
            sup.say(f"port(s) in use (another stack running?): {', '.join(busy)}; pass other ports "
                    "(0 picks a free one)")
            return 1
        tokens = _secrets(home)
        check_signers(w3, dep, rpc_url, set(args.without))
        sup.say("starting services:")
        services = build_services(home, rpc_url, ports, tokens, set(args.without), available_commands(), sup.say)
        for s in services:
            if sup.stopping:
                break
            sup.spawn(s)
            if not sup.wait_ready(s, args.ready_timeout) and not sup.stopping:
                if s.core:
                    sup.say(f"{s.name} did not become ready; last lines of {s.log_path}:\n{sup.tail(s)}")
                    rc = 1
                    return rc
                sup.say(f"{s.name} is not ready (optional; continuing); see {s.log_path}")
            if s.name == "matcher":
                why = journal_behind_chain(w3, dep, s.urls["ws"], home / "matcher")
                if why is None and "anvil" in sup.services:
                    why = chain_behind_journal(resume_head, home / ANVIL_STATE_FILE, s.urls["ws"])
                if why:
                    sup.say(f"cannot resume: {why}")
                    return 1
            write_state(home, sup, info)
        if sup.stopping:
            return 0
        print_summary(sup, dep, rpc_url, home)
        write_state(home, sup, info)
        last_write = time.monotonic()
        anvil_svc = sup.services.get("anvil")
        while not sup.stopping:
            # before check() schedules its restart (restart_at still unset): a restarted anvil
            # resumes from its last save, which may be behind what the matcher applied
            if (anvil_svc is not None and anvil_svc.proc is not None and anvil_svc.restart_at is None
                    and anvil_svc.proc.poll() is not None and "matcher" in sup.services):
                why = chain_behind_journal(saved_head(home / ANVIL_STATE_FILE), home / ANVIL_STATE_FILE,
                                           sup.services["matcher"].urls["ws"])
                if why:
                    sup.say(f"anvil exited with {anvil_svc.proc.returncode}; stopping the stack: {why}")
                    return 1
            sup.check()
            if time.monotonic() - last_write > 2:
                write_state(home, sup, info)
                last_write = time.monotonic()
            time.sleep(0.2)
        return rc
    except SetupError as err:
        sup.say(f"cannot start: {err}")
        return 1
    finally:
        sup.stop_all()
        (home / "stack.json").unlink(missing_ok=True)
        sup.say("stopped" + (" (chain state saved)" if "anvil" in sup.services else ""))
        logging.getLogger().removeHandler(fh)
        lock.close()


def print_summary(sup: Supervisor, dep: object, rpc_url: str, home: Path) -> None:
    """The URLs an operator needs, once everything is up."""
    from crossbook.chain.deploy import Deployment
    from crossbook.chain.devkeys import FIRST_USER, dev_address
    from crossbook.stack import DEMO_USERS

    assert isinstance(dep, Deployment)
    s = sup.services
    lines = ["", "Crossbook is up", f"  chain (JSON-RPC)  {rpc_url}   chain id {dep.chain_id}"]
    if "matcher" in s:
        lines.append(f"  matcher (ws)      {s['matcher'].urls['ws']}")
    if "dashboard" in s:
        lines.append(f"  dashboard         {s['dashboard'].urls['http']}")
    lines.append(f"  clearinghouse     {dep.clearinghouse}")
    lines.append("  metrics:")
    for n, svc in s.items():
        if "metrics" in svc.urls:
            lines.append(f"    {n:<10} {svc.urls['metrics']}")
    lines.append(f"  logs              {home / 'logs'}/<service>.log (JSON lines)")
    lines.append(f"  state             {home}")
    lines.append(f"  demo accounts     {', '.join(dev_address(i) for i in range(FIRST_USER, FIRST_USER + DEMO_USERS))}")
    lines.append("  try               crossbook markets | crossbook account | crossbook oracle set ETH 2500")
    lines.append("Ctrl-C stops everything (the chain state and the journal are kept).")
    sup.say("\n".join(lines))


__all__ = ["Service", "Supervisor", "add_up_args", "available_commands", "build_services", "run_up"]
