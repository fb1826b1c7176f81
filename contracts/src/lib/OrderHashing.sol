// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title OrderHashing
/// @notice EIP-712 struct hashes and digests of docs/protocol.md §4, computed in assembly straight from the
///         packed batch calldata, plus a low-s ecrecover.
library OrderHashing {
    bytes32 internal constant ORDER_TYPEHASH = keccak256(
        "Order(address owner,uint32 subaccount,uint32 market,bool isBuy,bool reduceOnly,uint64 price,uint64 size,uint64 nonce,uint64 expiry,uint32 maxFeePpm)"
    );
    bytes32 internal constant WITHDRAWAL_TYPEHASH = keccak256(
        "Withdrawal(address owner,uint32 subaccount,uint16 asset,uint128 amount,uint64 nonce,uint64 expiry)"
    );
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "Transfer(address owner,uint32 fromSubaccount,uint32 toSubaccount,uint16 asset,uint128 amount,uint64 nonce,uint64 expiry)"
    );
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant NAME_HASH = keccak256("Crossbook");
    bytes32 internal constant VERSION_HASH = keccak256("1");

    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @dev The domain separator for this chain and `verifying`.
    function domainSeparator(address verifying) internal view returns (bytes32 d) {
        bytes32 th = DOMAIN_TYPEHASH;
        bytes32 nh = NAME_HASH;
        bytes32 vh = VERSION_HASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, th)
            mstore(add(p, 0x20), nh)
            mstore(add(p, 0x40), vh)
            mstore(add(p, 0x60), chainid())
            mstore(add(p, 0x80), verifying)
            d := keccak256(p, 0xa0)
        }
    }

    /// @dev keccak256("\x19\x01" || domain || structHash).
    function digest(bytes32 domain, bytes32 structHash) internal pure returns (bytes32 d) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, hex"1901")
            mstore(add(p, 0x02), domain)
            mstore(add(p, 0x22), structHash)
            d := keccak256(p, 0x42)
        }
    }

    /// @dev Struct hash of a packed 65-byte order at absolute calldata offset `o`
    ///      (owner:20 sub:4 market:4 flags:1 price:8 size:8 nonce:8 expiry:8 maxFeePpm:4).
    function orderStructHashCd(uint256 o) internal pure returns (bytes32 h) {
        bytes32 th = ORDER_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, th)
            mstore(add(p, 0x20), shr(96, calldataload(o)))
            mstore(add(p, 0x40), shr(224, calldataload(add(o, 20))))
            mstore(add(p, 0x60), shr(224, calldataload(add(o, 24))))
            let flags := shr(248, calldataload(add(o, 28)))
            mstore(add(p, 0x80), and(flags, 1))
            mstore(add(p, 0xa0), and(shr(1, flags), 1))
            mstore(add(p, 0xc0), shr(192, calldataload(add(o, 29))))
            mstore(add(p, 0xe0), shr(192, calldataload(add(o, 37))))
            mstore(add(p, 0x100), shr(192, calldataload(add(o, 45))))
            mstore(add(p, 0x120), shr(192, calldataload(add(o, 53))))
            mstore(add(p, 0x140), shr(224, calldataload(add(o, 61))))
            h := keccak256(p, 0x160)
        }
    }

    /// @dev Struct hash of a Withdrawal.
    function withdrawalStructHash(address owner, uint256 subaccount, uint256 asset, uint256 amount, uint256 nonce, uint256 expiry)
        internal
        pure
        returns (bytes32 h)
    {
        bytes32 th = WITHDRAWAL_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, th)
            mstore(add(p, 0x20), owner)
            mstore(add(p, 0x40), subaccount)
            mstore(add(p, 0x60), asset)
            mstore(add(p, 0x80), amount)
            mstore(add(p, 0xa0), nonce)
            mstore(add(p, 0xc0), expiry)
            h := keccak256(p, 0xe0)
        }
    }

    /// @dev Struct hash of a Transfer.
    function transferStructHash(
        address owner,
        uint256 fromSub,
        uint256 toSub,
        uint256 asset,
        uint256 amount,
        uint256 nonce,
        uint256 expiry
    ) internal pure returns (bytes32 h) {
        bytes32 th = TRANSFER_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, th)
            mstore(add(p, 0x20), owner)
            mstore(add(p, 0x40), fromSub)
            mstore(add(p, 0x60), toSub)
            mstore(add(p, 0x80), asset)
            mstore(add(p, 0xa0), amount)
            mstore(add(p, 0xc0), nonce)
            mstore(add(p, 0xe0), expiry)
            h := keccak256(p, 0x100)
        }
    }

    /// @dev Recovers the signer of `d` from a packed 65-byte r||s||v signature at absolute calldata offset
    ///      `o`. Returns address(0) for v not in {27, 28}, high s, or a failed recovery.
    function recoverCd(bytes32 d, uint256 o) internal view returns (address signer) {
        uint256 halfN = HALF_N;
        assembly ("memory-safe") {
            let r := calldataload(o)
            let s := calldataload(add(o, 32))
            let v := shr(248, calldataload(add(o, 64)))
            if and(iszero(gt(s, halfN)), or(eq(v, 27), eq(v, 28))) {
                let p := mload(0x40)
                mstore(p, d)
                mstore(add(p, 0x20), v)
                mstore(add(p, 0x40), r)
                mstore(add(p, 0x60), s)
                mstore(0x00, 0)
                if staticcall(gas(), 1, p, 0x80, 0x00, 0x20) { signer := mload(0x00) }
            }
        }
    }
}
