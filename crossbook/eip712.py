"""EIP-712 hashing, signing and recovery for Order, Withdrawal and Transfer (section 4).

Fast path: type hashes and domain separators are precomputed, struct hashes are one
``struct.pack`` of 32-byte words plus keccak, and secp256k1 runs in coincurve. Signatures are
65 bytes ``r || s || v`` with ``v`` in {27, 28} and low ``s``, exactly what OpenZeppelin's
ECDSA accepts.

Addresses are returned as EIP-55 checksummed strings; compare them with :func:`same_address`.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Final

from coincurve import PrivateKey, PublicKey

from crossbook.protocol_types import (
    ADDRESS_LEN,
    SIGNATURE_LEN,
    Order,
    ProtocolRangeError,
    Transfer,
    Withdrawal,
)


# ---------------------------------------------------------------------------------------------
# keccak-256


def _load_fast_keccak() -> Callable[[bytes], bytes] | None:
    """keccak via pycryptodome's C library called directly: eth_hash's wrapper costs ~8 us per
    hash, three bare ctypes calls ~3 us. Returns None when that library is not loadable."""
    try:
        import ctypes

        from Crypto.Hash.keccak import _raw_keccak_lib  # type: ignore[attr-defined]

        # PyDLL keeps the GIL across each call (the calls are sub-microsecond, releasing the
        # GIL would cost more than it saves)
        lib = ctypes.PyDLL(_raw_keccak_lib._name)
        init, reset = lib.keccak_init, lib.keccak_reset
        absorb, digest = lib.keccak_absorb, lib.keccak_digest
    except Exception:  # pragma: no cover - depends on the installed pycryptodome build
        return None
    size_t = ctypes.c_size_t
    size32 = size_t(32)
    tls = threading.local()  # one sponge per thread: reset/absorb/digest must not interleave

    def new_state() -> tuple[Any, Any]:
        state = ctypes.c_void_p()
        if init(ctypes.byref(state), size_t(64), ctypes.c_ubyte(24)) != 0:
            raise MemoryError("keccak_init failed")
        out = ctypes.create_string_buffer(32)
        tls.st = (state, out)
        return state, out

    def keccak(data: bytes) -> bytes:
        try:
            state, out = tls.st
        except AttributeError:
            state, out = new_state()
        reset(state)
        absorb(state, data, size_t(len(data)))
        digest(state, out, size32, 1)  # padding byte 0x01 = original Keccak, not SHA3
        return bytes(out.raw)

    return keccak


def _slow_keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak as eth_keccak

    return bytes(eth_keccak(data))


def _choose_keccak() -> Callable[[bytes], bytes]:
    fast = _load_fast_keccak()
    # trust the fast path only if it reproduces the reference on known inputs
    if fast is not None:
        try:
            if all(fast(v) == _slow_keccak(v) for v in (b"", b"abc", bytes(range(200)))):
                return fast
        except Exception:  # pragma: no cover
            pass
    return _slow_keccak  # pragma: no cover


keccak256: Final[Callable[[bytes], bytes]] = _choose_keccak()


# ---------------------------------------------------------------------------------------------
# addresses


class InvalidSignature(ValueError):
    """A signature is malformed, high-s, has a bad ``v``, or recovers no valid key."""


@lru_cache(maxsize=8192)
def address_bytes(address: str) -> bytes:
    """20 raw bytes of a ``0x`` hex address (any case); raises ``ProtocolRangeError``."""
    if not isinstance(address, str) or len(address) != 42 or address[:2] not in ("0x", "0X"):
        raise ProtocolRangeError(f"not an address: {address!r}")
    try:
        raw = bytes.fromhex(address[2:])
    except ValueError:
        raise ProtocolRangeError(f"not an address: {address!r}") from None
    if len(raw) != ADDRESS_LEN:  # fromhex skips spaces: "0x 1 2 ..." is 42 chars too
        raise ProtocolRangeError(f"not an address: {address!r}")
    return raw


def to_checksum_address(address: bytes | str) -> str:
    """EIP-55 form of a 20-byte address or any-case hex string."""
    raw = address if isinstance(address, bytes) else address_bytes(address)
    if len(raw) != ADDRESS_LEN:
        raise ProtocolRangeError("an address is 20 bytes")
    lower = raw.hex()
    nibbles = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if h in "89abcdef" else c for c, h in zip(lower, nibbles)
    )


def same_address(a: bytes | str, b: bytes | str) -> bool:
    """Case-insensitive address equality over hex strings and/or raw bytes."""
    ra = a if isinstance(a, bytes) else address_bytes(a)
    rb = b if isinstance(b, bytes) else address_bytes(b)
    return ra == rb


# ---------------------------------------------------------------------------------------------
# type hashes and domain

DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
ORDER_TYPE: Final = (
    "Order(address owner,uint32 subaccount,uint32 market,bool isBuy,bool reduceOnly,"
    "uint64 price,uint64 size,uint64 nonce,uint64 expiry,uint32 maxFeePpm)"
)
WITHDRAWAL_TYPE: Final = (
    "Withdrawal(address owner,uint32 subaccount,uint16 asset,uint128 amount,uint64 nonce,"
    "uint64 expiry)"
)
TRANSFER_TYPE: Final = (
    "Transfer(address owner,uint32 fromSubaccount,uint32 toSubaccount,uint16 asset,"
    "uint128 amount,uint64 nonce,uint64 expiry)"
)
DOMAIN_NAME: Final = "Crossbook"
DOMAIN_VERSION: Final = "1"

DOMAIN_TYPEHASH: Final = keccak256(DOMAIN_TYPE.encode())
ORDER_TYPEHASH: Final = keccak256(ORDER_TYPE.encode())
WITHDRAWAL_TYPEHASH: Final = keccak256(WITHDRAWAL_TYPE.encode())
TRANSFER_TYPEHASH: Final = keccak256(TRANSFER_TYPE.encode())

# Each struct is typehash followed by one 32-byte word per field; "x" pads the high-order
# zero bytes, so a single pack yields the ABI encoding. uint128 is split into two uint64.
_ORDER_WORDS: Final = struct.Struct(">32s12x20s28xI28xI31x?31x?24xQ24xQ24xQ24xQ28xI")
_WITHDRAWAL_WORDS: Final = struct.Struct(">32s12x20s28xI30xH16xQQ24xQ24xQ")
_TRANSFER_WORDS: Final = struct.Struct(">32s12x20s28xI28xI30xH16xQQ24xQ24xQ")
_DOMAIN_WORDS: Final = struct.Struct(">32s32s32s32s12x20s")
_U64_MASK: Final = (1 << 64) - 1
_ORDER_PACK: Final = _ORDER_WORDS.pack  # orders are the hot path: no wrapper call


@dataclass(frozen=True, slots=True)
class Domain:
    """The Crossbook EIP-712 domain on one chain and clearinghouse; caches its separator."""

    chain_id: int
    verifying_contract: str
    separator: bytes = field(init=False, repr=False, compare=False)
    # b"\x19\x01" + separator: what every typed digest of this domain starts with
    prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.chain_id < 1 << 256:
            raise ProtocolRangeError("chain_id is a uint256")
        encoded = _DOMAIN_WORDS.pack(
            DOMAIN_TYPEHASH,
            keccak256(DOMAIN_NAME.encode()),
            keccak256(DOMAIN_VERSION.encode()),
            self.chain_id.to_bytes(32, "big"),
            address_bytes(self.verifying_contract),
        )
        object.__setattr__(self, "separator", keccak256(encoded))
        object.__setattr__(self, "prefix", b"\x19\x01" + self.separator)


def _packed(packer: struct.Struct, *values: Any) -> bytes:
    try:
        return packer.pack(*values)
    except struct.error as exc:
        raise ProtocolRangeError(f"field out of range for EIP-712 encoding: {exc}") from None


def order_struct_hash(order: Order) -> bytes:
    """``hashStruct(Order)``."""
    if type(order.is_buy) is not bool or type(order.reduce_only) is not bool:
        raise ProtocolRangeError("Order.is_buy and Order.reduce_only must be bool")
    try:
        words = _ORDER_PACK(
            ORDER_TYPEHASH, address_bytes(order.owner), order.subaccount, order.market,
            order.is_buy, order.reduce_only, order.price, order.size, order.nonce,
            order.expiry, order.max_fee_ppm)
    except struct.error as exc:
        raise ProtocolRangeError(f"field out of range for EIP-712 encoding: {exc}") from None
    return keccak256(words)


def _split128(amount: int) -> tuple[int, int]:
    if not 0 <= amount < 1 << 128:
        raise ProtocolRangeError(f"amount={amount} is not uint128")
    return amount >> 64, amount & _U64_MASK


def withdrawal_struct_hash(w: Withdrawal) -> bytes:
    """``hashStruct(Withdrawal)``."""
    hi, lo = _split128(w.amount)
    return keccak256(_packed(
        _WITHDRAWAL_WORDS, WITHDRAWAL_TYPEHASH, address_bytes(w.owner), w.subaccount, w.asset,
        hi, lo, w.nonce, w.expiry,
    ))


def transfer_struct_hash(t: Transfer) -> bytes:
    """``hashStruct(Transfer)``."""
    hi, lo = _split128(t.amount)
    return keccak256(_packed(
        _TRANSFER_WORDS, TRANSFER_TYPEHASH, address_bytes(t.owner), t.from_subaccount,
        t.to_subaccount, t.asset, hi, lo, t.nonce, t.expiry,
    ))


def typed_digest(domain: Domain, struct_hash: bytes) -> bytes:
    """``keccak256(0x1901 || domainSeparator || structHash)``."""
    return keccak256(domain.prefix + struct_hash)


def order_digest(domain: Domain, order: Order) -> bytes:
    """EIP-712 digest an order's signer signs."""
    return keccak256(domain.prefix + order_struct_hash(order))


def withdrawal_digest(domain: Domain, withdrawal: Withdrawal) -> bytes:
    """EIP-712 digest of a withdrawal (also its single-use id on-chain)."""
    return keccak256(domain.prefix + withdrawal_struct_hash(withdrawal))


def transfer_digest(domain: Domain, transfer: Transfer) -> bytes:
    """EIP-712 digest of a transfer (also its single-use id on-chain)."""
    return keccak256(domain.prefix + transfer_struct_hash(transfer))


def typed_data(domain: Domain, message: Order | Withdrawal | Transfer) -> dict[str, Any]:
    """The EIP-712 JSON form (``eth_signTypedData_v4``) of a message, for external wallets."""
    if isinstance(message, Order):
        primary, type_str = "Order", ORDER_TYPE
        body: dict[str, Any] = {
            "owner": message.owner, "subaccount": message.subaccount, "market": message.market,
            "isBuy": message.is_buy, "reduceOnly": message.reduce_only,
            "price": message.price, "size": message.size, "nonce": message.nonce,
            "expiry": message.expiry, "maxFeePpm": message.max_fee_ppm,
        }
    elif isinstance(message, Withdrawal):
        primary, type_str = "Withdrawal", WITHDRAWAL_TYPE
        body = {
            "owner": message.owner, "subaccount": message.subaccount, "asset": message.asset,
            "amount": message.amount, "nonce": message.nonce, "expiry": message.expiry,
        }
    else:
        primary, type_str = "Transfer", TRANSFER_TYPE
        body = {
            "owner": message.owner, "fromSubaccount": message.from_subaccount,
            "toSubaccount": message.to_subaccount, "asset": message.asset,
            "amount": message.amount, "nonce": message.nonce, "expiry": message.expiry,
        }
    return {
        "types": {
            "EIP712Domain": _fields_of(DOMAIN_TYPE),
            primary: _fields_of(type_str),
        },
        "primaryType": primary,
        "domain": {
            "name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        },
        "message": body,
    }


def _fields_of(type_str: str) -> list[dict[str, str]]:
    inner = type_str[type_str.index("(") + 1 : -1]
    return [{"name": n, "type": t} for t, n in (p.split(" ") for p in inner.split(","))]


# ---------------------------------------------------------------------------------------------
# signatures

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N: Final = SECP256K1_N // 2


def _public_key_address(public_key: PublicKey) -> bytes:
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest: 65 bytes ``r || s || v``, ``v`` in {27, 28}, low ``s``."""
    return _to_eth_signature(PrivateKey(private_key).sign_recoverable(digest, hasher=None))


def _to_eth_signature(recoverable: bytes) -> bytes:
    # libsecp256k1 already emits low-s; only the recovery id needs Ethereum's +27
    return recoverable[:64] + bytes((recoverable[64] + 27,))


def _coincurve_recover(digest: bytes, sig64: bytes, recid: int) -> bytes | None:
    """Uncompressed public key (64 bytes, no 0x04 prefix) through coincurve's public API."""
    try:
        key = PublicKey.from_signature_and_message(sig64 + bytes((recid,)), digest, hasher=None)
    except Exception:  # coincurve raises plain Exception/ValueError on no solution
        return None
    return key.format(compressed=False)[1:]


def _load_fast_recover() -> Callable[[bytes, bytes, int], bytes | None] | None:
    """Recovery as three direct calls into coincurve's libsecp256k1 on reused buffers.
    coincurve's wrapper allocates four cffi objects, builds two Python key objects and
    copies the signature twice per recovery; this does none of that. None when coincurve's
    private binding module is not there (the public API then serves)."""
    try:
        from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
        from coincurve.context import GLOBAL_CONTEXT
    except Exception:  # pragma: no cover - depends on the installed coincurve build
        return None
    ctx = GLOBAL_CONTEXT.ctx  # recovery only reads the context: safe from any thread
    parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
    recover = lib.secp256k1_ecdsa_recover
    serialize = lib.secp256k1_ec_pubkey_serialize
    uncompressed = lib.SECP256K1_EC_UNCOMPRESSED
    buffer = ffi.buffer
    tls = threading.local()  # buffers per thread: cffi releases the GIL inside each call

    def new_buffers() -> tuple[Any, Any, Any, Any]:
        bufs = (ffi.new("secp256k1_ecdsa_recoverable_signature *"),
                ffi.new("secp256k1_pubkey *"), ffi.new("unsigned char[65]"),
                ffi.new("size_t *"))
        tls.bufs = bufs
        return bufs

    def fast(digest: bytes, sig64: bytes, recid: int) -> bytes | None:
        try:
            rsig, pub, out, out_len = tls.bufs
        except AttributeError:
            rsig, pub, out, out_len = new_buffers()
        if not parse(ctx, rsig, sig64, recid) or not recover(ctx, pub, rsig, digest):
            return None
        out_len[0] = 65
        serialize(ctx, out, out_len, pub, uncompressed)
        return buffer(out)[1:65]

    return fast


def _choose_recover() -> Callable[[bytes, bytes, int], bytes | None]:
    fast = _load_fast_recover()
    if fast is not None:
        # trust the direct binding only if it agrees with coincurve's own API
        key = PrivateKey(b"\x07" * 32)
        digest = keccak256(b"crossbook recover self-test")
        sig = key.sign_recoverable(digest, hasher=None)
        try:
            if fast(digest, sig[:64], sig[64]) == _coincurve_recover(digest, sig[:64], sig[64]):
                return fast
        except Exception:  # pragma: no cover
            pass
    return _coincurve_recover  # pragma: no cover


_recover_public_key: Final = _choose_recover()

# uncompressed public key -> address: a market maker signs with a handful of keys, so the
# address keccak of a recovered key is nearly always a dict hit
_ADDRESS_OF_KEY: dict[bytes, bytes] = {}
_ADDRESS_CACHE_MAX: Final = 65_536
_ZERO32: Final = bytes(32)
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES: Final = SECP256K1_HALF_N.to_bytes(32, "big")


def recover_address_bytes(digest: bytes, signature: bytes) -> bytes:
    """Raw 20-byte signer of ``digest``; raises :class:`InvalidSignature` on anything
    OpenZeppelin's ``ECDSA.recover`` would refuse (length, high ``s``, ``v``, r/s zero)."""
    if len(digest) != 32:
        raise InvalidSignature("digest must be 32 bytes")
    if len(signature) != SIGNATURE_LEN:
        raise InvalidSignature(f"signature must be {SIGNATURE_LEN} bytes")
    v = signature[64]
    if v != 27 and v != 28:
        raise InvalidSignature(f"v must be 27 or 28, got {v}")
    # big-endian words of equal length compare like the integers they encode
    r = signature[:32]
    s = signature[32:64]
    if s > _HALF_N_BYTES:
        raise InvalidSignature("high-s (malleable) signature")
    if r == _ZERO32 or s == _ZERO32 or r >= _N_BYTES:
        raise InvalidSignature("r or s out of range")
    public = _recover_public_key(digest, signature[:64], v - 27)
    if public is None:
        raise InvalidSignature("no public key recovers")
    address = _ADDRESS_OF_KEY.get(public)
    if address is None:
        if len(_ADDRESS_OF_KEY) >= _ADDRESS_CACHE_MAX:
            _ADDRESS_OF_KEY.clear()
        address = _ADDRESS_OF_KEY[public] = keccak256(public)[12:]
    return address


def recover_signer(digest: bytes, signature: bytes) -> str:
    """Checksummed address that signed ``digest``; see :func:`recover_address_bytes`."""
    return to_checksum_address(recover_address_bytes(digest, signature))


def is_signed_by(digest: bytes, signature: bytes, address: bytes | str) -> bool:
    """True when ``signature`` is valid and recovers to ``address`` (any case)."""
    try:
        signer = recover_address_bytes(digest, signature)
    except InvalidSignature:
        return False
    return same_address(signer, address)


class Signer:
    """A private key with its address, signing Crossbook messages for one domain or many."""

    __slots__ = ("_key", "address", "address_bytes")

    def __init__(self, private_key: bytes | str) -> None:
        """``private_key``: 32 bytes, or their hex (``0x`` prefix optional), the form keys take
        on every command line and in :class:`crossbook.sdk.ChainAccount`."""
        if isinstance(private_key, str):
            try:
                private_key = bytes.fromhex(private_key.removeprefix("0x"))
            except ValueError:
                raise ValueError("a private key is 32 bytes of hex") from None
        if len(private_key) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = PrivateKey(private_key)
        self.address_bytes: bytes = _public_key_address(self._key.public_key)
        self.address: str = to_checksum_address(self.address_bytes)

    def sign_digest(self, digest: bytes) -> bytes:
        """65-byte Ethereum signature of a 32-byte digest."""
        return _to_eth_signature(self._key.sign_recoverable(digest, hasher=None))

    def sign_order(self, domain: Domain, order: Order) -> bytes:
        """Sign an order (the signer may be its owner or an approved agent)."""
        return self.sign_digest(order_digest(domain, order))

    def sign_withdrawal(self, domain: Domain, withdrawal: Withdrawal) -> bytes:
        """Sign a withdrawal (must be the owner)."""
        return self.sign_digest(withdrawal_digest(domain, withdrawal))

    def sign_transfer(self, domain: Domain, transfer: Transfer) -> bytes:
        """Sign a transfer (must be the owner)."""
        return self.sign_digest(transfer_digest(domain, transfer))

    def __repr__(self) -> str:
        # never print the key
        return f"Signer({self.address})"
