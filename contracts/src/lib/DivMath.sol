// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title DivMath
/// @notice Signed division with explicit rounding (docs/protocol.md §1). Divisors of floorDiv and ceilDiv
///         must be positive.
library DivMath {
    /// @dev Rounds toward minus infinity (Python `//`). Requires b > 0.
    function floorDiv(int256 a, int256 b) internal pure returns (int256 q) {
        unchecked {
            q = a / b;
            if (a % b != 0 && a < 0) q -= 1;
        }
    }

    /// @dev Rounds toward plus infinity (`-floor_div(-a, b)`). Requires b > 0.
    function ceilDiv(int256 a, int256 b) internal pure returns (int256 q) {
        unchecked {
            q = a / b;
            if (a % b != 0 && a > 0) q += 1;
        }
    }

    /// @dev Rounds toward zero (Solidity's native signed division). Reverts on b == 0 or MIN / -1.
    function truncDiv(int256 a, int256 b) internal pure returns (int256) {
        return a / b;
    }

    /// @dev Unsigned ceiling division. Requires b > 0.
    function ceilDivU(uint256 a, uint256 b) internal pure returns (uint256) {
        return a == 0 ? 0 : (a - 1) / b + 1;
    }

    function abs(int256 a) internal pure returns (uint256) {
        return a < 0 ? uint256(-a) : uint256(a);
    }
}
