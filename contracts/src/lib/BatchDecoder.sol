// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BatchDecoder
/// @notice Big-endian reads from the packed batch (docs/protocol.md §5) with calldataload. Offsets are
///         absolute calldata offsets; bounds are checked by the caller once per item.
library BatchDecoder {
    uint256 internal constant HEADER = 10;
    uint256 internal constant ORDER = 65;
    uint256 internal constant SIG = 65;
    uint256 internal constant FILL_BODY = 284; // 2 * (ORDER + SIG) + 8 + 8 + 4 + 4
    uint256 internal constant SIGNED_ORDER = 130; // ORDER + SIG, one order-table entry
    uint256 internal constant FILL_REF_BODY = 28; // 2 + 2 + 8 + 8 + 4 + 4
    uint256 internal constant WITHDRAW_BODY = 123;
    uint256 internal constant TRANSFER_BODY = 127;
    uint256 internal constant FUNDING_BODY = 8;
    uint256 internal constant FORCED_BODY = 8;

    uint8 internal constant KIND_FILL = 1;
    uint8 internal constant KIND_WITHDRAW = 2;
    uint8 internal constant KIND_TRANSFER = 3;
    uint8 internal constant KIND_FUNDING = 4;
    uint8 internal constant KIND_FORCED = 5;
    uint8 internal constant KIND_FILL_REF = 6;

    /// @dev Body length of an item kind, 0 for an unknown kind.
    function bodyLength(uint256 kind) internal pure returns (uint256) {
        if (kind == KIND_FILL_REF) return FILL_REF_BODY; // the common kind first
        if (kind == KIND_FILL) return FILL_BODY;
        if (kind == KIND_WITHDRAW) return WITHDRAW_BODY;
        if (kind == KIND_TRANSFER) return TRANSFER_BODY;
        if (kind == KIND_FUNDING || kind == KIND_FORCED) return 8;
        return 0;
    }

    /// @dev Reads `n` (1..32) big-endian bytes at absolute calldata offset `o`.
    function u(uint256 o, uint256 n) internal pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := shr(sub(256, shl(3, n)), calldataload(o))
        }
    }

    function addr(uint256 o) internal pure returns (address a) {
        assembly ("memory-safe") {
            a := shr(96, calldataload(o))
        }
    }
}
