// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev Minimal subset of the forge cheatcode interface (forge-std is not available offline).
interface Vm {
    struct Gas {
        uint64 gasLimit;
        uint64 gasTotalUsed;
        uint64 gasMemoryUsed;
        int64 gasRefunded;
        uint64 gasRemaining;
    }

    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function warp(uint256) external;
    function roll(uint256) external;
    function chainId(uint256) external;
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function expectRevert() external;
    function expectRevert(bytes4) external;
    function expectRevert(bytes calldata) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
    function assume(bool) external pure;
    function label(address, string calldata) external;
    function expectEmit() external;
    function pauseGasMetering() external;
    function lastCallGas() external view returns (Gas memory);
    function resumeGasMetering() external;
    function snapshotState() external returns (uint256);
    function revertToState(uint256) external returns (bool);
    function readFile(string calldata) external view returns (string memory);
}

/// @dev Minimal test base: cheatcodes, assertions that revert with a message, bound(), invariant targets and
///      ds-test log events (forge prints them with -vv).
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    bool public IS_TEST = true;

    event log(string);
    event log_named_uint(string key, uint256 val);
    event log_named_int(string key, int256 val);
    event log_named_string(string key, string val);

    address[] private _targets;
    FuzzSelector[] private _targetSelectors;

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    function targetContract(address a) internal {
        _targets.push(a);
    }

    function targetSelector(FuzzSelector memory s) internal {
        _targetSelectors.push(s);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targets;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }

    function _fail(string memory what, uint256 a, uint256 b) private pure {
        revert(string.concat(what, ": ", _u(a), " vs ", _u(b)));
    }

    function _u(uint256 v) internal pure returns (string memory) {
        if (v == 0) return "0";
        bytes memory b;
        while (v != 0) {
            b = abi.encodePacked(bytes1(uint8(48 + v % 10)), b);
            v /= 10;
        }
        return string(b);
    }

    function _i(int256 v) internal pure returns (string memory) {
        return v < 0 ? string.concat("-", _u(uint256(-v))) : _u(uint256(v));
    }

    function assertTrue(bool c) internal pure {
        if (!c) revert("assertTrue failed");
    }

    function assertTrue(bool c, string memory m) internal pure {
        if (!c) revert(m);
    }

    function assertFalse(bool c) internal pure {
        if (c) revert("assertFalse failed");
    }

    function assertFalse(bool c, string memory m) internal pure {
        if (c) revert(m);
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        if (a != b) _fail("assertEq(uint)", a, b);
    }

    function assertEq(uint256 a, uint256 b, string memory m) internal pure {
        if (a != b) revert(string.concat(m, ": ", _u(a), " != ", _u(b)));
    }

    function assertEq(int256 a, int256 b) internal pure {
        if (a != b) revert(string.concat("assertEq(int): ", _i(a), " != ", _i(b)));
    }

    function assertEq(int256 a, int256 b, string memory m) internal pure {
        if (a != b) revert(string.concat(m, ": ", _i(a), " != ", _i(b)));
    }

    function assertEq(address a, address b) internal pure {
        if (a != b) revert("assertEq(address) failed");
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        if (a != b) revert("assertEq(bytes32) failed");
    }

    function assertEq(bool a, bool b) internal pure {
        if (a != b) revert("assertEq(bool) failed");
    }

    function assertEq(bool a, bool b, string memory m) internal pure {
        if (a != b) revert(m);
    }

    function assertGe(int256 a, int256 b) internal pure {
        if (a < b) revert(string.concat("assertGe(int): ", _i(a), " < ", _i(b)));
    }

    function assertGe(int256 a, int256 b, string memory m) internal pure {
        if (a < b) revert(string.concat(m, ": ", _i(a), " < ", _i(b)));
    }

    function assertGe(uint256 a, uint256 b) internal pure {
        if (a < b) _fail("assertGe(uint)", a, b);
    }

    function assertLe(uint256 a, uint256 b) internal pure {
        if (a > b) _fail("assertLe(uint)", a, b);
    }

    function assertLe(int256 a, int256 b) internal pure {
        if (a > b) revert(string.concat("assertLe(int): ", _i(a), " > ", _i(b)));
    }

    function assertGt(uint256 a, uint256 b) internal pure {
        if (a <= b) _fail("assertGt(uint)", a, b);
    }

    function assertLt(int256 a, int256 b) internal pure {
        if (a >= b) revert(string.concat("assertLt(int): ", _i(a), " >= ", _i(b)));
    }

    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        uint256 span = hi - lo;
        if (span == type(uint256).max) return x;
        return lo + x % (span + 1);
    }

    function boundInt(int256 x, int256 lo, int256 hi) internal pure returns (int256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        uint256 span = uint256(hi - lo);
        uint256 ux;
        unchecked {
            ux = uint256(x) - uint256(lo);
        }
        return lo + int256(span == type(uint256).max ? ux : ux % (span + 1));
    }
}
