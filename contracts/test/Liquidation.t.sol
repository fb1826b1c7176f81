// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Test.sol";
import {Fixture} from "./utils/Fixture.sol";
import {Health} from "../src/interfaces/ICrossbookTypes.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

/// @dev Liquidation (docs/protocol.md §9) on real fills: alice goes 10 ETH long at 2000 against bob with 10,000
///      USDC; carol (100,000 USDC) liquidates. ETH at 1020: tier 1; 1005: tier 2; 990: bankrupt.
contract LiquidationTest is Fixture {
    uint64 constant MAXU64 = type(uint64).max;
    address dave = address(0xDA7E);

    function setUp() public override {
        super.setUp();
        _depositQuote(alice, 0, 10_000e6);
        _depositQuote(bob, 0, 100_000e6);
        _depositQuote(carol, 0, 100_000e6);
        assertEq(_settleOne(_simpleFill(0, true, 2000e8, 10e8, 1, 2)), 0);
    }

    function _eth(uint256 px) internal {
        fEth.setAnswer(int256(px));
    }

    function _conservation() internal view {
        int256 q = ch.quoteBalance(alice, 0) + ch.quoteBalance(bob, 0) + ch.quoteBalance(carol, 0)
            + ch.quoteBalance(carol, 1) + ch.quoteBalance(dave, 0);
        int256 rhs = q + int256(ch.insuranceFund()) + int256(ch.feePool()) + ch.fundingBalance(0)
            + ch.fundingBalance(1) + ch.fundingBalance(2);
        assertEq(int256(usdc.balanceOf(address(ch))) + int256(ch.unbackedDebt()), rhs, "conservation");
    }

    function _liq(uint64 maxSize, uint64 limit) internal returns (uint64 size, uint64 price) {
        vm.prank(carol);
        return ch.liquidate(alice, 0, 0, maxSize, limit, 0);
    }

    // ------------------------------------------------------------------ params

    function test_defaultsAndSetParams() public {
        (uint32 p, uint32 s, uint32 b, uint32 c) = ch.liquidationParams();
        assertEq(uint256(p), 20_000);
        assertEq(uint256(s), 500_000);
        assertEq(uint256(b), 100_000);
        assertEq(uint256(c), 500_000);
        ch.setLiquidationParams(30_000, 0, 0, 1_000_000);
        (p,,, c) = ch.liquidationParams();
        assertEq(uint256(p), 30_000);
        assertEq(uint256(c), 1_000_000);
        vm.expectRevert(InvalidLiquidationParams.selector);
        ch.setLiquidationParams(500_001, 0, 0, 0);
        vm.expectRevert(InvalidLiquidationParams.selector);
        ch.setLiquidationParams(0, 1_000_001, 0, 0);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, bob, bytes32(0)));
        ch.setLiquidationParams(1, 1, 1, 1);
    }

    function test_moduleInstalledOnce() public {
        vm.expectRevert(LiquidationModuleLocked.selector);
        ch.setLiquidationModule(address(oracle));
    }

    // ------------------------------------------------------------------ liquidate reverts

    function test_notLiquidatable() public {
        vm.expectRevert(NotLiquidatable.selector);
        _liq(MAXU64, MAXU64);
        _eth(1100e8); // underwater on entry but above maintenance
        vm.expectRevert(NotLiquidatable.selector);
        _liq(MAXU64, MAXU64);
    }

    function test_priceLimit() public {
        _eth(1020e8);
        // liquidator buys at floor(1020 * (1 - 1%)) = 1009.8
        vm.expectRevert(PriceLimit.selector);
        _liq(MAXU64, 1009e8);
        (, uint64 price) = _liq(MAXU64, 10098e7);
        assertEq(uint256(price), 10098e7);
    }

    function test_liquidatorUnhealthy() public {
        _eth(1020e8);
        vm.prank(dave); // dave's sub-account holds nothing
        vm.expectRevert(LiquidatorUnhealthy.selector);
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
    }

    function test_staleOracleReverts() public {
        _eth(1020e8);
        vm.warp(block.timestamp + 3601);
        fBtc.setAnswer(int256(uint256(BTC_PX)) * 1e10);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(1)));
        _liq(MAXU64, MAXU64);
    }

    function test_selfLiquidationAndNothingToLiquidate() public {
        _eth(1020e8);
        vm.prank(alice);
        vm.expectRevert(SelfLiquidation.selector);
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        vm.expectRevert(NothingToLiquidate.selector);
        vm.prank(carol);
        ch.liquidate(alice, 0, 1, MAXU64, MAXU64, 0); // no BTC position
        vm.expectRevert(NothingToLiquidate.selector);
        _liq(1e4, MAXU64); // below one lot (1e5)
    }

    // ------------------------------------------------------------------ tiers

    function test_tier1PartialRestoresBufferedHealth() public {
        _eth(1030e8);
        Health memory before = ch.health(alice, 0);
        assertLt(before.maintenanceHealth, 0);
        assertGe(before.equity * 1e6, before.maintenanceRequirement * 500_000); // not critical
        uint256 insBefore = ch.insuranceFund();
        vm.recordLogs();
        (uint64 size, uint64 price) = _liq(MAXU64, MAXU64);
        assertGt(uint256(size), 0);
        assertTrue(uint256(size) < 10e8, "partial");
        assertEq(uint256(size) % 1e5, 0, "lot multiple");
        Health memory h = ch.health(alice, 0);
        assertGe(h.maintenanceHealth * 1e6, h.maintenanceRequirement * 100_000, "buffer restored");
        assertEq(_size(alice, 0, 0), 10e8 - int256(uint256(size)));
        assertEq(_size(carol, 0, 0), int256(uint256(size)));
        assertEq(ch.openInterest(0), 10e8, "total longs unchanged");
        uint256 ins = ch.insuranceFund() - insBefore;
        assertEq(ins, (uint256(size) * 1030e8 / 1e10) * 10_000 / PPM, "insurance share");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs[logs.length - 1].topics[0], Liquidated.selector);
        (,,, int256 delta, uint64 evPrice, uint256 penalty, uint256 evIns) =
            abi.decode(logs[logs.length - 1].data, (uint32, uint32, uint32, int256, uint64, uint256, uint256));
        assertEq(delta, -int256(uint256(size)));
        assertEq(uint256(evPrice), uint256(price));
        assertEq(evIns, ins);
        assertEq(penalty, uint256(size) * 1030e8 / 1e10 - uint256(size) * price / 1e10 + ins);
        vm.expectRevert(NotLiquidatable.selector);
        _liq(MAXU64, MAXU64);
        _conservation();
    }

    function test_tier2TakesEverything() public {
        _eth(1005e8);
        Health memory before = ch.health(alice, 0);
        assertLt(before.equity * 1e6, before.maintenanceRequirement * 500_000); // critical
        (uint64 size,) = _liq(MAXU64, MAXU64);
        assertEq(uint256(size), 10e8);
        assertEq(_size(alice, 0, 0), 0);
        _conservation();
    }

    function test_maxSizeCapsAndRoundsToLot() public {
        _eth(1005e8);
        (uint64 size,) = _liq(3e8 + 12_345, MAXU64);
        assertEq(uint256(size), 3e8);
    }

    function test_shortIsLiquidatedUpward() public {
        // bob is short 10 ETH with 100,000: push ETH to make him liquidatable
        _eth(11_700e8);
        Health memory h = ch.health(bob, 0);
        assertLt(h.maintenanceHealth, 0);
        vm.prank(carol);
        vm.expectRevert(PriceLimit.selector);
        ch.liquidate(bob, 0, 0, MAXU64, 12_000e8, 0); // liquidator sells at ceil(11700 * 1.01) = 11817 < limit
        vm.prank(carol);
        (uint64 size, uint64 price) = ch.liquidate(bob, 0, 0, MAXU64, 0, 0);
        assertEq(uint256(price), 11_817e8);
        assertTrue(size < 10e8, "partial");
        assertEq(_size(carol, 0, 0), -int256(uint256(size)));
        _conservation();
    }

    // ------------------------------------------------------------------ bad debt

    function test_badDebtInsuranceThenFeePoolThenUnbacked() public {
        _eth(990e8);
        _liq(MAXU64, MAXU64);
        int256 q = ch.quoteBalance(alice, 0);
        assertLt(q, 0);
        uint256 deficit = uint256(-q);
        // insurance holds the liquidation's share; fee pool the fill's fees; both smaller than the deficit
        uint256 fund = ch.insuranceFund();
        uint256 pool = ch.feePool();
        assertTrue(fund + pool < deficit);
        vm.expectEmit();
        emit BadDebtSettled(alice, 0, fund, pool, deficit - fund - pool);
        ch.settleBadDebt(alice, 0);
        assertEq(ch.quoteBalance(alice, 0), 0);
        assertEq(ch.insuranceFund(), 0);
        assertEq(ch.feePool(), 0);
        assertEq(ch.unbackedDebt(), deficit - fund - pool);
        _conservation();
        vm.expectRevert(NoBadDebt.selector);
        ch.settleBadDebt(alice, 0);
    }

    function test_badDebtNeedsNoPositions() public {
        _eth(990e8);
        vm.expectRevert(NoBadDebt.selector);
        ch.settleBadDebt(alice, 0); // still holds the position
        vm.expectRevert(NoBadDebt.selector);
        ch.settleBadDebt(bob, 0); // positive quote
    }

    function test_badDebtFullyInsured() public {
        _eth(990e8);
        _liq(MAXU64, MAXU64);
        usdc.mint(address(this), 1_000e6);
        usdc.approve(address(ch), 1_000e6);
        ch.depositInsurance(1_000e6);
        uint256 deficit = uint256(-ch.quoteBalance(alice, 0));
        uint256 fund = ch.insuranceFund();
        ch.settleBadDebt(alice, 0);
        assertEq(ch.insuranceFund(), fund - deficit);
        assertEq(ch.unbackedDebt(), 0);
        _conservation();
    }

    // ------------------------------------------------------------------ deleverage

    function test_deleverageRoleAndEligibility() public {
        _eth(990e8);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, carol, keccak256("KEEPER_ROLE"))
        );
        vm.prank(carol);
        ch.deleverage(alice, 0, 0, bob, 0, 1e8);
        ch.grantRole(keccak256("KEEPER_ROLE"), carol);
        // counterparty must be opposite and profitable
        vm.prank(carol);
        vm.expectRevert(InvalidCounterparty.selector);
        ch.deleverage(alice, 0, 0, carol, 0, 1e8);
        // a fund larger than the deficit makes ADL unnecessary
        usdc.mint(address(this), 1_000e6);
        usdc.approve(address(ch), 1_000e6);
        ch.depositInsurance(1_000e6);
        vm.prank(carol);
        vm.expectRevert(NotDeleveragable.selector);
        ch.deleverage(alice, 0, 0, bob, 0, 1e8);
    }

    function test_deleverageAtBankruptcyPrice() public {
        _eth(990e8);
        ch.grantRole(keccak256("KEEPER_ROLE"), carol);
        vm.prank(bob);
        vm.expectRevert(); // bob lacks KEEPER_ROLE
        ch.deleverage(alice, 0, 0, bob, 0, 10e8);
        int256 e = ch.health(alice, 0).equity;
        assertLt(e, 0);
        vm.prank(carol);
        ch.deleverage(alice, 0, 0, bob, 0, 10e8);
        assertEq(_size(alice, 0, 0), 0);
        assertEq(_size(bob, 0, 0), 0);
        int256 q = ch.quoteBalance(alice, 0);
        assertGe(q, 0, "closed at the bankruptcy price: equity back to >= 0");
        assertTrue(q <= 10e8 * 1e6 / 1e10 + 1, "by at most one tick of rounding");
        assertEq(ch.openInterest(0), 0);
        _conservation();
    }

    // ------------------------------------------------------------------ collateral

    function test_liquidateCollateral() public {
        _depositWeth(dave, 0, 5e18);
        // dave has no signing key in the fixture: his indebted state is written through the harness
        uint16[] memory assets = new uint16[](1);
        uint256[] memory amounts = new uint256[](1);
        assets[0] = 1;
        amounts[0] = 5e18;
        uint32[] memory none32 = new uint32[](0);
        int256[] memory none = new int256[](0);
        ch.harnessSetPortfolio(dave, 0, -8_000e6, assets, amounts, none32, none, none, none);
        _eth(1600e8); // W = 5 * 1600 * 0.9 = 7200 < 8000 debt
        assertLt(ch.health(dave, 0).maintenanceHealth, 0);
        vm.prank(carol);
        vm.expectRevert(PriceLimit.selector);
        ch.liquidateCollateral(dave, 0, 1, type(uint128).max, 1500e8, 0);
        vm.prank(carol);
        (uint128 amount, uint64 price) = ch.liquidateCollateral(dave, 0, 1, type(uint128).max, MAXU64, 0);
        assertEq(uint256(price), 1568e8); // 1600 * 0.98
        assertEq(uint256(amount), 5e18); // all of it: 5 WETH pay 7840 < 8000
        assertEq(ch.collateralBalance(dave, 0, 1), 0);
        assertEq(ch.collateralBalance(carol, 0, 1), 5e18);
        assertEq(ch.quoteBalance(dave, 0), -160e6);
        ch.settleBadDebt(dave, 0);
        assertEq(ch.quoteBalance(dave, 0), 0);
    }

    function test_liquidateCollateralStopsAtZeroQuote() public {
        uint16[] memory assets = new uint16[](1);
        uint256[] memory amounts = new uint256[](1);
        assets[0] = 1;
        amounts[0] = 5e18;
        uint32[] memory markets = new uint32[](1);
        int256[] memory sizes = new int256[](1);
        int256[] memory ons = new int256[](1);
        int256[] memory snaps = new int256[](1);
        sizes[0] = 10e8;
        ons[0] = 20_000e6;
        ch.harnessSetPortfolio(dave, 0, -12_000e6, assets, amounts, markets, sizes, ons, snaps);
        // E = -12000 + 10 * 1000 + 5 * 1000 * 0.9 = 2500; R = 300 -> healthy; at 800: -12000+8000+3600 < 0
        _eth(800e8);
        vm.prank(carol);
        (uint128 amount,) = ch.liquidateCollateral(dave, 0, 1, 1e18, MAXU64, 0);
        assertEq(uint256(amount), 1e18, "maxAmount caps");
        assertEq(ch.quoteBalance(dave, 0), -12_000e6 + 784e6);
    }

    // ------------------------------------------------------------------ fuzz

    /// @dev Tier 1 always restores maintenance health (with the buffer) when the position is large enough, and
    ///      the liquidator never pays more than its limit.
    function testFuzz_tier1RestoresAndRespectsLimit(uint256 px, uint256 limit) public {
        px = bound(px, 1006e8, 1040e8); // liquidatable; tier 1 where not critical
        px = px / 1e6 * 1e6;
        _eth(px);
        Health memory before = ch.health(alice, 0);
        if (before.maintenanceHealth >= 0 || before.equity * 1e6 < before.maintenanceRequirement * 500_000) return;
        limit = bound(limit, px * 97 / 100, px);
        vm.prank(carol);
        try ch.liquidate(alice, 0, 0, MAXU64, uint64(limit), 0) returns (uint64 size, uint64 price) {
            assertTrue(uint256(price) <= limit, "limit");
            if (size < 10e8) {
                Health memory h = ch.health(alice, 0);
                assertGe(h.maintenanceHealth, 0, "restored");
                assertGe(h.maintenanceHealth * 1e6, h.maintenanceRequirement * 100_000, "buffer");
            }
            _conservation();
        } catch (bytes memory err) {
            assertEq(bytes4(err), PriceLimit.selector);
            assertGt(uint256(px) * 990_000 / PPM / 1e6 * 1e6, limit);
        }
    }

    /// @dev Conservation (with unbacked debt) across liquidation, bad debt and deleverage at random prices.
    function testFuzz_conservation(uint256 px, bool adl) public {
        px = bound(px, 900e8, 1040e8);
        _eth(px);
        if (ch.health(alice, 0).maintenanceHealth >= 0) return;
        if (adl && ch.health(alice, 0).equity < 0) {
            ch.grantRole(keccak256("KEEPER_ROLE"), carol);
            vm.prank(carol);
            ch.deleverage(alice, 0, 0, bob, 0, 10e8);
        } else {
            _liq(MAXU64, MAXU64);
        }
        _conservation();
        if (_size(alice, 0, 0) == 0 && ch.quoteBalance(alice, 0) < 0) {
            ch.settleBadDebt(alice, 0);
            _conservation();
        }
    }
}
