"""EIP-712 digests and signatures agree with eth_account; malleable signatures are refused."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_hash.auto import keccak as reference_keccak
from eth_utils import to_checksum_address as reference_checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbook.eip712 import (
    ORDER_TYPE,
    SECP256K1_N,
    Domain,
    InvalidSignature,
    Signer,
    is_signed_by,
    keccak256,
    order_digest,
    recover_address_bytes,
    recover_signer,
    same_address,
    sign_digest,
    to_checksum_address,
    transfer_digest,
    typed_data,
    withdrawal_digest,
)
from crossbook.protocol_types import Order, ProtocolRangeError, Transfer, Withdrawal

u16, u32 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
u64, u128 = st.integers(0, 2**64 - 1), st.integers(0, 2**128 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: reference_checksum(b))
domains = st.builds(Domain, st.integers(0, 2**256 - 1), addresses)
orders = st.builds(Order, addresses, u32, u32, st.booleans(), st.booleans(), u64, u64, u64, u64,
                   u32)
withdrawals = st.builds(Withdrawal, addresses, u32, u16, u128, u64, u64)
transfers = st.builds(Transfer, addresses, u32, u32, u16, u128, u64, u64)
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
ORDER = Order("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23", 1, 0, True, False,
              50_000 * 10**8, 10**8, 1, 2**40, 500)


def _reference_digest(domain: Domain, message: Order | Withdrawal | Transfer) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=typed_data(domain, message))))


@settings(max_examples=60, deadline=None)
@given(domains, orders)
def test_order_digest_matches_eth_account(domain: Domain, order: Order) -> None:
    assert order_digest(domain, order) == _reference_digest(domain, order)


@settings(max_examples=60, deadline=None)
@given(domains, withdrawals)
def test_withdrawal_digest_matches_eth_account(domain: Domain, w: Withdrawal) -> None:
    assert withdrawal_digest(domain, w) == _reference_digest(domain, w)


@settings(max_examples=60, deadline=None)
@given(domains, transfers)
def test_transfer_digest_matches_eth_account(domain: Domain, t: Transfer) -> None:
    assert transfer_digest(domain, t) == _reference_digest(domain, t)


def test_type_string_is_the_spec() -> None:
    assert ORDER_TYPE == (
        "Order(address owner,uint32 subaccount,uint32 market,bool isBuy,bool reduceOnly,"
        "uint64 price,uint64 size,uint64 nonce,uint64 expiry,uint32 maxFeePpm)"
    )
    # domain separator by hand from the spec's domain string
    sep = keccak256(
        keccak256(b"EIP712Domain(string name,string version,uint256 chainId,"
                  b"address verifyingContract)")
        + keccak256(b"Crossbook") + keccak256(b"1") + (31337).to_bytes(32, "big")
        + bytes(12) + bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3")
    )
    assert DOMAIN.separator == sep


def test_domain_fields_change_the_digest() -> None:
    other_chain = Domain(1, DOMAIN.verifying_contract)
    other_contract = Domain(31337, "0x" + "00" * 19 + "01")
    d = order_digest(DOMAIN, ORDER)
    assert d != order_digest(other_chain, ORDER) and d != order_digest(other_contract, ORDER)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32).filter(
    lambda k: 0 < int.from_bytes(k, "big") < SECP256K1_N), orders)
def test_signature_equals_eth_account(key: bytes, order: Order) -> None:
    signer = Signer(key)
    account = Account.from_key(key)
    assert signer.address == account.address
    order = Order(signer.address, *[getattr(order, f) for f in Order.__struct_fields__[1:]])
    signable = encode_typed_data(full_message=typed_data(DOMAIN, order))
    ours = signer.sign_order(DOMAIN, order)
    theirs = account.sign_message(signable)
    assert ours == bytes(theirs.signature)  # RFC 6979: deterministic, low-s, v in {27, 28}
    assert ours[64] in (27, 28)
    assert Account.recover_message(signable, signature=ours) == signer.address
    assert recover_signer(order_digest(DOMAIN, order), ours) == signer.address


def test_sign_digest_function_and_is_signed_by() -> None:
    digest = order_digest(DOMAIN, ORDER)
    sig = sign_digest(KEY, digest)
    assert sig == Signer(KEY).sign_digest(digest)
    assert is_signed_by(digest, sig, ORDER.owner.lower())
    assert not is_signed_by(keccak256(b"other"), sig, ORDER.owner)
    assert not is_signed_by(digest, sig[:64], ORDER.owner)
    assert "4c0883" not in repr(Signer(KEY))


def test_signer_takes_the_key_as_hex_too() -> None:
    """Keys arrive as hex on every command line: both spellings give the same signer."""
    assert Signer("0x" + KEY.hex()).address == Signer(KEY).address == Signer(KEY.hex()).address
    for bad in ("0x" + KEY.hex()[:-2], "0x" + "zz" * 32, KEY[:31]):
        with pytest.raises(ValueError, match="32 bytes"):
            Signer(bad)


def test_high_s_signature_rejected() -> None:
    digest = order_digest(DOMAIN, ORDER)
    sig = sign_digest(KEY, digest)
    s = int.from_bytes(sig[32:64], "big")
    # the malleable twin: (r, n - s, flipped v) is a valid ECDSA signature of the same key
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    assert Account._recover_hash(digest, signature=twin) == ORDER.owner  # ecrecover accepts it
    with pytest.raises(InvalidSignature, match="high-s"):
        recover_signer(digest, twin)


@pytest.mark.parametrize("mutate", [
    lambda sig: sig[:64] + b"\x00",  # v = 0 (OpenZeppelin wants 27/28)
    lambda sig: sig[:64] + b"\x1d",  # v = 29
    lambda sig: bytes(32) + sig[32:],  # r = 0
    lambda sig: sig[:32] + bytes(32) + sig[64:],  # s = 0
    lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:],  # r >= n
    lambda sig: sig[:64],  # 64 bytes
    lambda sig: sig + b"\x00",  # 66 bytes
])
def test_malformed_signatures_rejected(mutate: object) -> None:
    digest = order_digest(DOMAIN, ORDER)
    sig = sign_digest(KEY, digest)
    with pytest.raises(InvalidSignature):
        recover_address_bytes(digest, mutate(sig))  # type: ignore[operator]


def test_out_of_range_fields_refused() -> None:
    for bad in (
        Order(ORDER.owner, 2**32, 0, True, False, 1, 1, 1, 1, 1),
        Order(ORDER.owner, 0, 0, True, False, -1, 1, 1, 1, 1),
        Order(ORDER.owner, 0, 0, 1, False, 1, 1, 1, 1, 1),  # type: ignore[arg-type]
        Order("0x1234", 0, 0, True, False, 1, 1, 1, 1, 1),
    ):
        with pytest.raises(ProtocolRangeError):
            order_digest(DOMAIN, bad)
    with pytest.raises(ProtocolRangeError):
        withdrawal_digest(DOMAIN, Withdrawal(ORDER.owner, 0, 0, 2**128, 0, 0))


@given(st.binary(max_size=300))
def test_fast_keccak_matches_reference(data: bytes) -> None:
    assert keccak256(data) == bytes(reference_keccak(data))


@given(st.binary(min_size=20, max_size=20))
def test_checksum_matches_eth_utils(raw: bytes) -> None:
    expected = reference_checksum(raw)
    assert to_checksum_address(raw) == expected
    assert to_checksum_address(expected.lower()) == expected
    assert same_address(expected.lower(), raw) and same_address("0x" + expected[2:].upper(), raw)


def test_random_keys_round_trip() -> None:
    for _ in range(20):
        signer = Signer(os.urandom(32))
        digest = keccak256(os.urandom(40))
        assert recover_address_bytes(digest, signer.sign_digest(digest)) == signer.address_bytes
