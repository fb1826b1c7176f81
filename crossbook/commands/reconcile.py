"""``crossbook reconcile``: check that the chain settled exactly what the matcher sequenced.

Reads the matcher's journal directory (read-only; a stopped matcher is the main case) and the
Clearinghouse contract, and runs :func:`crossbook.reconcile.reconcile`. Exit codes: 0 consistent,
1 at least one failure finding, 2 the check could not run (no journal, no deployment, the RPC
unreachable, an unreadable journal).
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from crossbook.commands.common import add_chain_args, env

if TYPE_CHECKING:
    from crossbook.reconcile import Report


def default_journal_dir() -> str:
    """``$CROSSBOOK_JOURNAL_DIR``, else where `crossbook up` keeps the matcher's journal."""
    from crossbook.paths import state_dir

    return env("CROSSBOOK_JOURNAL_DIR") or str(state_dir() / "matcher")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``reconcile``."""
    p = sub.add_parser("reconcile", help="verify settlement: the chain settled exactly the items the "
                                         "matcher's journal sequenced, and its ledger equals the chain")
    p.add_argument("--journal-dir", default=None,
                   help="the matcher's journal + snapshots directory "
                        "[$CROSSBOOK_JOURNAL_DIR, else $CROSSBOOK_HOME/matcher]")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_chain_args(p)
    p.set_defaults(func=run)


def _usage_error(message: str) -> int:
    print(f"crossbook reconcile: {message}", file=sys.stderr)
    return 2


def summary(report: "Report", journal_dir: str) -> str:
    """The human-readable report: counts, rejections, then one line per finding."""
    start = (f"snapshot at command {report.journal_from_snapshot}" if report.journal_from_snapshot
             else "record 1")
    lines = [
        f"journal {journal_dir} (replayed from {start}); chain block {report.chain_block}, "
        f"nextSeq {report.chain_next_seq}",
        f"items:     {report.journal_next_seq - 1} sequenced, {report.settled} settled in "
        f"{report.batches} batches, {report.pending} pending, {report.not_in_journal} settled before "
        "the retained journal",
        f"checked:   {report.checked} on-chain items equal the journal's, byte for byte",
        f"rejected:  {len(report.rejected)}"
        + "".join(f"\n  seq {r.seq} {r.reason_name}: bust {r.bust}" for r in report.rejected),
        f"ledger:    {report.accounts_compared} sub-accounts compared "
        f"(matcher cursor block {report.matcher_cursor[0]}, log {report.matcher_cursor[1]})",
    ]
    failures = report.failures
    lines.append(f"findings:  {len(failures)} failures, {len(report.findings) - len(failures)} info")
    for f in report.findings:
        lines.append(f"  {f.severity.upper():7} {f.kind}: {f.message}")
    lines.append("CONSISTENT" if report.ok else "INCONSISTENT")
    return "\n".join(lines)


def _saved_chain(args: argparse.Namespace) -> Path | None:
    """The embedded chain's saved state, when no RPC was named: after Ctrl-C `crossbook up` has
    stopped anvil too, and the state file is all that is left of the chain."""
    from crossbook.paths import ANVIL_STATE_FILE, state_dir

    if args.rpc_url:
        return None
    path = state_dir() / ANVIL_STATE_FILE
    return path if path.is_file() else None


@contextlib.contextmanager
def _private_chain(state: Path) -> Iterator[str]:
    """A private anvil on a copy of ``state`` (anvil writes its state file back when it stops,
    and reconcile only reads); its RPC URL."""
    from crossbook.chain.anvil import AnvilNode

    with tempfile.TemporaryDirectory(prefix="crossbook-reconcile-") as tmp:
        copy = Path(tmp) / state.name
        shutil.copyfile(state, copy)
        with AnvilNode(state_file=copy) as node:
            yield node.url


def run(args: argparse.Namespace) -> int:
    """Reconcile the journal with the chain; print the report; 0 / 1 / 2 (see module doc)."""
    import msgspec
    from web3 import Web3

    from crossbook.commands.common import load_deployment
    from crossbook.reconcile import reconcile_stack
    from matcher.journal import JournalError

    journal_dir = args.journal_dir or default_journal_dir()
    if not Path(journal_dir).is_dir():
        return _usage_error(f"no journal directory {journal_dir}: pass --journal-dir "
                            "(or set $CROSSBOOK_JOURNAL_DIR / $CROSSBOOK_HOME)")
    try:
        dep, rpc = load_deployment(args)
    except SystemExit as exc:  # its message says which file is missing and what to pass
        return _usage_error(str(exc))
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    with contextlib.ExitStack() as cleanup:
        if not w3.is_connected():
            saved = _saved_chain(args)
            if saved is None:
                return _usage_error(f"RPC {rpc} unreachable: pass --rpc-url (or set $CROSSBOOK_RPC_URL)")
            print(f"the chain at {rpc} is down: checking against the state `crossbook up` saved in "
                  f"{saved} (a private anvil on a copy)", file=sys.stderr)
            rpc = cleanup.enter_context(_private_chain(saved))
            w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
        if not w3.eth.get_code(Web3.to_checksum_address(dep.clearinghouse)):
            return _usage_error(f"no contract at {dep.clearinghouse} on {rpc}: is this the deployment's chain?")
        try:
            report = reconcile_stack(journal_dir, w3, dep)
        except FileNotFoundError as exc:
            return _usage_error(str(exc))
        except (JournalError, msgspec.DecodeError) as exc:
            return _usage_error(f"cannot read the journal in {journal_dir}: {exc}")
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(summary(report, journal_dir))
    return 0 if report.ok else 1
