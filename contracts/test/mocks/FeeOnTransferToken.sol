// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @dev Burns 1% of every transfer (taken from the amount received).
contract FeeOnTransferToken is ERC20 {
    uint8 internal immutable _dec;

    constructor(uint8 dec) ERC20("Fee Token", "FEE") {
        _dec = dec;
    }

    function decimals() public view override returns (uint8) {
        return _dec;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0), fee);
            super._update(from, to, value - fee);
        } else {
            super._update(from, to, value);
        }
    }
}

/// @dev A token whose transfers out of `blocked` holders can be switched off.
contract PausableToken is ERC20 {
    bool public paused;

    constructor() ERC20("Pausable", "PAU") {}

    function decimals() public pure override returns (uint8) {
        return 18;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setPaused(bool p) external {
        paused = p;
    }

    function _update(address from, address to, uint256 value) internal override {
        require(!paused || from == address(0), "paused");
        super._update(from, to, value);
    }
}
