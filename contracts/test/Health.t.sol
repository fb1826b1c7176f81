// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Health} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Hand-computed examples of docs/protocol.md §3 through the harness portfolio setter.
contract HealthTest is Fixture {
    function _set(address who, int256 quote, uint256 wethAmt, int256 size, int256 on, int256 snap) internal {
        uint16[] memory assets = new uint16[](1);
        uint256[] memory amounts = new uint256[](1);
        assets[0] = 1;
        amounts[0] = wethAmt;
        uint32[] memory markets = new uint32[](1);
        int256[] memory sizes = new int256[](1);
        int256[] memory ons = new int256[](1);
        int256[] memory snaps = new int256[](1);
        sizes[0] = size;
        ons[0] = on;
        snaps[0] = snap;
        ch.harnessSetPortfolio(who, 0, quote, assets, amounts, markets, sizes, ons, snaps);
    }

    function _check(Health memory h, int256 e, int256 eim, int256 rim, int256 rmm) internal pure {
        assertEq(h.equity, e, "equity");
        assertEq(h.initialEquity, eim, "initialEquity");
        assertEq(h.initialRequirement, rim, "initialRequirement");
        assertEq(h.maintenanceRequirement, rmm, "maintenanceRequirement");
        assertEq(h.initialHealth, eim - rim, "initialHealth");
        assertEq(h.maintenanceHealth, e - rmm, "maintenanceHealth");
    }

    function test_bigExampleWithTiersFundingCollateralAndHaircut() public {
        // 1000 ETH long at 2000 (N = 2e12: tier 1 full, 1e12 in tier 2), bought at 1900, 10 WETH collateral,
        // funding moved 2 USD per ETH since the snapshot, haircut 50%.
        ch.harnessSetCumulativeFunding(0, 5e8);
        _set(alice, -1.6e12, 10e18, 1000e8, 1.9e12, 3e8);
        // PV 2e12; A = 1000e8 * 2e8 / 1e10 = 2e9; W_maint 1.8e10, W_init 1.6e10; U = 1e11 -> haircut 5e10
        int256 e = -1.6e12 + 2e12 - 2e9 + 1.8e10;
        int256 eim = -1.6e12 + 2e12 - 2e9 + 1.6e10 - 5e10;
        _check(ch.health(alice, 0), e, eim, 5e10 + 1e11, 3e10 + 6e10);
        assertFalse(ch.isLiquidatable(alice, 0));
    }

    function test_roundingOfEveryTerm() public {
        // short 3 base atoms at price 2000e8 + 1 (set through a feed with more decimals)
        fEth.setAnswer(int256(uint256(ETH_PX)) + 1);
        ch.harnessSetCumulativeFunding(0, 7);
        _set(alice, 1000, 0, -3, -50, 0);
        // PV = floor(-600000000003 / 1e10) = -61; N = 61; A = ceil(-21 / 1e10) = 0; U = -11
        // R_im = ceil(61 * 0.05) = 4; R_mm = ceil(61 * 0.03) = 2
        _check(ch.health(alice, 0), 939, 939, 4, 2);
        // long 3: PV = 60, A = ceil(21/1e10) = 1, U = 60 - 10 = 50 -> haircut ceil(25) = 25
        _set(alice, 1000, 0, 3, 10, 0);
        _check(ch.health(alice, 0), 1000 + 60 - 1, 1000 + 60 - 1 - 25, 4, 2);
        // collateral value floors: 1 wei of WETH is worth 0
        _set(alice, 0, 1, 0, 0, 0);
        _check(ch.health(alice, 0), 0, 0, 0, 0);
        // 5e8 wei * (2000e8 + 1) / 1e20 = 1.000000000005 -> 1; weighted floor(0.9) = 0, floor(0.8) = 0
        _set(alice, 0, 5e8, 0, 0, 0);
        _check(ch.health(alice, 0), 0, 0, 0, 0);
        // 5e12 wei -> V = 10000; W_maint 9000, W_init 8000
        _set(alice, 0, 5e12, 0, 0, 0);
        _check(ch.health(alice, 0), 9000, 8000, 0, 0);
    }

    function test_tierBoundaries() public {
        // exactly at the first cap: N = 500e8 * 2000e8 / 1e10 = 1e12
        _set(alice, 1e13, 0, 500e8, 1e12, 0);
        Health memory h = ch.health(alice, 0);
        assertEq(h.initialRequirement, 5e10);
        assertEq(h.maintenanceRequirement, 3e10);
        // one atom above: N = 1e12 + 20 -> + ceil(20 * 0.1) = 2 and ceil(20 * 0.06) = 2
        _set(alice, 1e13, 0, 500e8 + 1, 1e12, 0);
        h = ch.health(alice, 0);
        assertEq(h.initialRequirement, 5e10 + 2);
        assertEq(h.maintenanceRequirement, 3e10 + 2);
        // into the unbounded last tier: N = 6e12 -> 5e10 + 4e11 + 2e11; maint 3e10 + 2.4e11 + 1.2e11
        _set(alice, 1e13, 0, -3000e8, -6e12, 0);
        h = ch.health(alice, 0);
        assertEq(h.initialRequirement, 5e10 + 4e11 + 2e11);
        assertEq(h.maintenanceRequirement, 3e10 + 2.4e11 + 1.2e11);
    }

    function test_haircutSumsBeforeRounding() public {
        // two markets each with U = 1 atom: haircut ceil(2 * 0.5) = 1, not 2
        uint32[] memory markets = new uint32[](2);
        markets[0] = 0;
        markets[1] = 2;
        int256[] memory sizes = new int256[](2);
        sizes[0] = 1e8; // PV 2000e6
        sizes[1] = 1e8; // PV 100e6
        int256[] memory ons = new int256[](2);
        ons[0] = 2000e6 - 1;
        ons[1] = 100e6 - 1;
        ch.harnessSetPortfolio(alice, 0, 0, new uint16[](0), new uint256[](0), markets, sizes, ons, new int256[](2));
        Health memory h = ch.health(alice, 0);
        assertEq(h.equity, 2100e6);
        assertEq(h.initialEquity, 2100e6 - 1);
    }

    function test_liquidatableAndReplaceClearsOldState() public {
        _set(alice, -1950e6, 0, 1e8, 2000e6, 0); // E = 50, R_mm = 60
        assertTrue(ch.isLiquidatable(alice, 0));
        // replacing the portfolio clears the position and the collateral
        ch.harnessSetPortfolio(alice, 0, 7, new uint16[](0), new uint256[](0), new uint32[](0), new int256[](0), new int256[](0), new int256[](0));
        (int256 s, int256 on,) = ch.position(alice, 0, 0);
        assertEq(s, 0);
        assertEq(on, 0);
        _check(ch.health(alice, 0), 7, 7, 0, 0);
    }

    function test_healthRevertsOnBadPrice() public {
        _set(alice, 0, 1e18, 0, 0, 0);
        fEth.setAnswer(0);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(1)));
        ch.health(alice, 0);
        // an empty account needs no price
        _check(ch.health(bob, 0), 0, 0, 0, 0);
    }
}
