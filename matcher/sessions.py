"""Login by signed challenge, and per-connection session state.

Flow (docs/api.md, "Login"): on connect the server sends a random 32-byte ``challenge`` in the
``hello`` frame. The client signs the EIP-712 message

    Login(address owner,address signer,bytes32 challenge,uint64 expiry)

in the Crossbook domain (same name/version/chainId/verifyingContract as orders), with either the
owner key or an agent key the owner approved on-chain (``setAgent``; the engine learns approvals
from ``AgentSet`` chain events). EIP-712 rather than EIP-191 because the domain binds the login to
this chain and clearinghouse, and every wallet that can sign an order can sign it.

A challenge is single use: any login attempt consumes it (so a captured login can never be
replayed, not even on the same connection), and it expires ``challenge_ttl_s`` after issue.
``expiry`` (unix seconds, chosen by the client) must be in the future and at most
``max_login_expiry_s`` ahead.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Final

from crossbook.eip712 import (
    Domain,
    InvalidSignature,
    address_bytes,
    keccak256,
    recover_address_bytes,
    typed_digest,
)
from crossbook.protocol_types import ProtocolRangeError

LOGIN_TYPE: Final = "Login(address owner,address signer,bytes32 challenge,uint64 expiry)"
LOGIN_TYPEHASH: Final = keccak256(LOGIN_TYPE.encode())
_LOGIN_WORDS: Final = struct.Struct(">32s12x20s12x20s32s24xQ")


def login_digest(domain: Domain, owner: str, signer: str, challenge: bytes, expiry: int) -> bytes:
    """EIP-712 digest of ``Login(owner, signer, challenge, expiry)``."""
    if len(challenge) != 32:
        raise ProtocolRangeError("challenge must be 32 bytes")
    if not 0 <= expiry < 2**64:
        raise ProtocolRangeError("expiry is a uint64")
    sh = keccak256(_LOGIN_WORDS.pack(LOGIN_TYPEHASH, address_bytes(owner), address_bytes(signer),
                                     challenge, expiry))
    return typed_digest(domain, sh)


class LoginError(Exception):
    """A refused login: ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Session:
    """State of one connection: login, challenge, dead-man's switch and the orders it placed."""

    conn_id: int
    challenge: bytes = b""
    challenge_at: float = 0.0  # monotonic issue time
    owner: str | None = None  # lower-case once logged in
    signer: str | None = None
    cancel_on_disconnect: bool = False
    dead_man_ms: int = 0
    dead_man_timer: asyncio.TimerHandle | None = None
    # exchange order ids this session placed that are still live (dead-man / disconnect cancel)
    orders: set[int] = field(default_factory=set)

    def new_challenge(self) -> bytes:
        """Issue a fresh single-use challenge (the previous one dies)."""
        self.challenge = secrets.token_bytes(32)
        self.challenge_at = time.monotonic()
        return self.challenge

    @property
    def logged_in(self) -> bool:
        """True after a successful login."""
        return self.owner is not None


class Authenticator:
    """Verifies logins against the domain and the engine's agent approvals."""

    def __init__(self, domain: Domain, challenge_ttl_s: float = 60.0,
                 max_login_expiry_s: int = 300) -> None:
        self.domain = domain
        self.challenge_ttl_s = challenge_ttl_s
        self.max_login_expiry_s = max_login_expiry_s

    def verify(self, session: Session, owner: str, signer: str, challenge_hex: str,
               expiry: int, signature_hex: str, now: int, is_agent: Callable[[str, str], bool]) -> None:
        """Log ``session`` in or raise :class:`LoginError`. Consumes the challenge either way."""
        current, issued = session.challenge, session.challenge_at
        session.challenge = b""  # single use, whatever happens next
        if session.logged_in:
            raise LoginError("ALREADY_LOGGED_IN", "this connection is already logged in")
        try:
            got = bytes.fromhex(challenge_hex[2:])
            sig = bytes.fromhex(signature_hex[2:])
        except ValueError:
            raise LoginError("BAD_REQUEST", "challenge and signature must be hex") from None
        if not current or got != current:
            raise LoginError("BAD_CHALLENGE",
                             "unknown or already used challenge; request a new one")
        if time.monotonic() - issued > self.challenge_ttl_s:
            raise LoginError("LOGIN_EXPIRED", "challenge expired; request a new one")
        if expiry < now:
            raise LoginError("LOGIN_EXPIRED", "login expiry is in the past")
        if expiry > now + self.max_login_expiry_s:
            raise LoginError("BAD_REQUEST",
                             f"login expiry more than {self.max_login_expiry_s}s ahead")
        try:
            digest = login_digest(self.domain, owner, signer, got, expiry)
            rec = "0x" + recover_address_bytes(digest, sig).hex()
        except (InvalidSignature, ProtocolRangeError) as exc:
            raise LoginError("BAD_SIGNATURE", str(exc)) from None
        o, s = owner.lower(), signer.lower()
        if rec != s:
            raise LoginError("BAD_SIGNATURE", "signature does not recover to `signer`")
        if s != o and not is_agent(o, s):
            raise LoginError("NOT_AUTHORISED", "signer is neither the owner nor an approved agent")
        session.owner = o
        session.signer = s


__all__ = ["Authenticator", "LOGIN_TYPE", "LOGIN_TYPEHASH", "LoginError", "Session",
           "login_digest"]
