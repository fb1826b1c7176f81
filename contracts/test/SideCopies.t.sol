// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";

/// @dev SettlementModule keeps one copy of _side, _readOrder, _marginOk and _store's code per side of a fill (_sideT/
///      _sideK, _readOrderT/_readOrderK, _marginOkT/_marginOkK, and the two blocks of _commitFill), so that each reads
///      its side's fields at constant addresses. The copies must stay the same code: this test reads the source and
///      checks each K copy's text equals its T copy's with every T_ field address spelled K_.
contract SideCopiesTest is Test {
    string private constant SRC = "src/impl/SettlementModule.sol";

    function test_sideCopiesAreTheSameCode() public view {
        bytes memory src = bytes(vm.readFile(SRC));
        _check(src, "function _sideT(", "function _sideK(");
        _checkBlocks(src, "        // side t\n", "        // side k\n", "        // both sides\n");
        _check(src, "function _readOrderT(", "function _readOrderK(");
        _check(src, "function _marginOkT(", "function _marginOkK(");
    }

    function _check(bytes memory src, bytes memory tHead, bytes memory kHead) private pure {
        _same(_body(src, tHead), _body(src, kHead));
    }

    /// @dev The same for two blocks of one function: t's from `tMark` to `kMark`, k's from `kMark` to `endMark`.
    function _checkBlocks(bytes memory src, bytes memory tMark, bytes memory kMark, bytes memory endMark) private pure {
        uint256 a = _find(src, tMark, 0);
        uint256 b = _find(src, kMark, a);
        uint256 e = _find(src, endMark, b);
        assertTrue(e < src.length, "blocks not found");
        _same(_slice(src, a + tMark.length, b), _slice(src, b + kMark.length, e));
    }

    function _same(bytes memory t, bytes memory k) private pure {
        bytes memory tk = _toK(t);
        assertTrue(keccak256(tk) != keccak256(t), "the T copy names no T_ field");
        assertEq(keccak256(tk), keccak256(k));
    }

    /// @dev The text after `head` up to the function's closing brace (the first line holding only "    }").
    function _body(bytes memory src, bytes memory head) private pure returns (bytes memory out) {
        uint256 a = _find(src, head, 0);
        assertTrue(a < src.length, "function not found");
        a += head.length;
        uint256 b = _find(src, "\n    }\n", a);
        assertTrue(b < src.length, "end not found");
        out = _slice(src, a, b);
    }

    function _slice(bytes memory src, uint256 a, uint256 b) private pure returns (bytes memory out) {
        out = new bytes(b - a);
        for (uint256 i = 0; i < out.length; ++i) {
            out[i] = src[a + i];
        }
    }

    /// @dev `b` with each "T_" that starts an identifier spelled "K_".
    function _toK(bytes memory b) private pure returns (bytes memory out) {
        out = bytes.concat(b);
        for (uint256 i = 0; i + 1 < b.length; ++i) {
            if (b[i] == "T" && b[i + 1] == "_" && (i == 0 || !_ident(b[i - 1]))) out[i] = "K";
        }
    }

    function _ident(bytes1 c) private pure returns (bool) {
        return (c >= "0" && c <= "9") || (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || c == "_";
    }

    /// @dev First index >= `from` where `needle` occurs in `hay`, or hay.length.
    function _find(bytes memory hay, bytes memory needle, uint256 from) private pure returns (uint256) {
        for (uint256 i = from; i + needle.length <= hay.length; ++i) {
            bool ok = true;
            for (uint256 j = 0; j < needle.length; ++j) {
                if (hay[i + j] != needle[j]) {
                    ok = false;
                    break;
                }
            }
            if (ok) return i;
        }
        return hay.length;
    }
}
