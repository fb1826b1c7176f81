// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken
/// @notice ERC20 with configurable decimals and an open mint.
/// @dev FOR LOCAL CHAINS AND TESTS ONLY: anyone can mint any amount.
contract TestToken is ERC20 {
    uint8 internal immutable _decimals;

    /// @param name_ Token name.
    /// @param symbol_ Token symbol.
    /// @param decimals_ Token decimals (the quote asset must use 6).
    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    /// @notice Token decimals as given to the constructor.
    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Mints `amount` atoms to `to`. Open to anyone (local use only).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
