// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title BatchEncoder
/// @notice Test-side batch building shared by the fixtures, the gas test and the invariant handler.
library BatchEncoder {
    /// @dev The relayer's encoding (docs/protocol.md §5, crossbook/batch_codec.py): every inline kind-1 FILL
    ///      becomes a FILL_REF into an order table that holds each distinct signed order (order + signature
    ///      bytes) once; other items are copied. Without fills there is no table.
    function encode(uint64 seq, bytes[] memory items) internal pure returns (bytes memory b) {
        uint256 n = items.length;
        bytes32[] memory keys = new bytes32[](2 * n);
        uint256[] memory src = new uint256[](2 * n); // memory pointer of each table entry's 130 bytes
        uint256[] memory refs = new uint256[](2 * n);
        uint256 nOrd;
        uint256 len = 10;
        for (uint256 i = 0; i < n; ++i) {
            bytes memory it = items[i];
            if (it.length != 285 || uint8(it[0]) != 1) {
                len += it.length;
                continue;
            }
            len += 29;
            for (uint256 side = 0; side < 2; ++side) {
                uint256 ptr;
                bytes32 h;
                assembly {
                    ptr := add(add(it, 33), mul(side, 130))
                    h := keccak256(ptr, 130)
                }
                uint256 idx = nOrd;
                for (uint256 q = 0; q < nOrd; ++q) {
                    if (keys[q] == h) {
                        idx = q;
                        break;
                    }
                }
                if (idx == nOrd) {
                    keys[nOrd] = h;
                    src[nOrd++] = ptr;
                }
                refs[2 * i + side] = idx;
            }
        }
        if (nOrd != 0) len += 3 + 130 * nOrd;
        b = new bytes(len);
        bytes memory head = nOrd == 0
            ? abi.encodePacked(seq, uint16(n))
            : abi.encodePacked(seq, uint16(n), uint8(0), uint16(nOrd));
        uint256 o;
        assembly {
            o := add(b, 32)
            mcopy(o, add(head, 32), mload(head))
            o := add(o, mload(head))
        }
        for (uint256 q = 0; q < nOrd; ++q) {
            uint256 ptr = src[q];
            assembly {
                mcopy(o, ptr, 130)
                o := add(o, 130)
            }
        }
        for (uint256 i = 0; i < n; ++i) {
            bytes memory it = items[i];
            bytes memory out = it;
            if (it.length == 285 && uint8(it[0]) == 1) {
                out = bytes.concat(bytes1(uint8(6)), bytes2(uint16(refs[2 * i])), bytes2(uint16(refs[2 * i + 1])));
                bytes memory tail = new bytes(24);
                assembly {
                    mcopy(add(tail, 32), add(it, add(32, 261)), 24)
                }
                out = bytes.concat(out, tail);
            }
            assembly {
                mcopy(o, add(out, 32), mload(out))
                o := add(o, mload(out))
            }
        }
    }
}
