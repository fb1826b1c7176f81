// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Order} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Audit of liquidation and oracle protection (docs/trust-model.md "Oracles", "Liquidation module"): alice goes
///      10 ETH long at 2000 against bob with 10,000 USDC, as in Liquidation.t.sol.
contract AuditLiquidationTest is Fixture {
    uint64 constant MAXU64 = type(uint64).max;

    function setUp() public override {
        super.setUp();
        _depositQuote(alice, 0, 10_000e6);
        _depositQuote(bob, 0, 100_000e6);
        _depositQuote(carol, 0, 100_000e6);
        assertEq(_settleOne(_simpleFill(0, true, 2000e8, 10e8, 1, 2)), 0);
    }

    function _conserved() internal view {
        int256 q = ch.quoteBalance(alice, 0) + ch.quoteBalance(alice, 1) + ch.quoteBalance(bob, 0)
            + ch.quoteBalance(carol, 0);
        int256 rhs = q + int256(ch.insuranceFund()) + int256(ch.feePool()) + ch.fundingBalance(0)
            + ch.fundingBalance(1) + ch.fundingBalance(2);
        assertEq(int256(usdc.balanceOf(address(ch))) + int256(ch.unbackedDebt()), rhs, "conservation");
    }

    /// @dev An out-of-band price (inside the heartbeat, positive) is refused like a stale one on every path that
    ///      prices: liquidation, collateral liquidation, the health views and a risk-increasing fill.
    function test_outOfBandPriceRefusedEverywhere() public {
        fEth.setAnswer(1020e8); // liquidatable at this price...
        oracle.setFeed(1, address(fEth), 3600, 1500e8, 3000e8); // ...which is outside the configured band
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(1)));
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(1)));
        ch.liquidateCollateral(alice, 0, 1, type(uint128).max, MAXU64, 0);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(1)));
        ch.isLiquidatable(alice, 0);
        // a fill that raises alice's position needs the price
        assertEq(_settleOne(_simpleFill(0, true, 2000e8, 1e8, 3, 4)), ORACLE_UNAVAILABLE);
        assertEq(_size(alice, 0, 0), 10e8);
        _conserved();
    }

    /// @dev Self-liquidation (another sub-account of the same owner) earns the owner nothing a third-party
    ///      liquidator would not, and costs the insurance fund nothing more: same size, price, insurance share and
    ///      bad debt either way.
    function test_selfLiquidationGivesNoEdge() public {
        _depositQuote(alice, 1, 100_000e6);
        fEth.setAnswer(990e8); // bankrupt: tier 2 takes everything, then bad debt
        uint256 snap = vm.snapshotState();
        vm.prank(carol);
        (uint64 sizeC, uint64 priceC) = ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        ch.settleBadDebt(alice, 0);
        uint256 insC = ch.insuranceFund();
        uint256 unbackedC = ch.unbackedDebt();
        int256 gainC = ch.health(carol, 0).equity - 100_000e6;
        _conserved();
        vm.revertToState(snap);
        int256 before1 = ch.health(alice, 1).equity;
        vm.prank(alice);
        (uint64 sizeA, uint64 priceA) = ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 1);
        ch.settleBadDebt(alice, 0);
        assertEq(uint256(sizeA), uint256(sizeC), "size");
        assertEq(uint256(priceA), uint256(priceC), "price");
        assertEq(ch.insuranceFund(), insC, "insurance");
        assertEq(ch.unbackedDebt(), unbackedC, "unbacked");
        assertEq(ch.health(alice, 1).equity - before1, gainC, "liquidator gain");
        assertEq(ch.quoteBalance(alice, 0), 0);
        _conserved();
    }

    /// @dev docs/trust-model.md, reduce-only mode (protocol §9.8): with the market's oracle down a fill where both
    ///      sides strictly reduce is applied without any margin check, at whatever price both signed limits allow.
    ///      The same fill with a fresh price is INSUFFICIENT_MARGIN; without one it leaves alice bankrupt and the
    ///      deficit is socialised (insurance fund, fee pool, unbacked debt) while the counterparty keeps the gain.
    function test_reduceOnlyModeSkipsTheMarginCheck() public {
        Order memory sell = _order(alice, 0, 0, false, 500e8, 10e8, 5); // a close with a wide protection price
        sell.reduceOnly = true;
        Order memory buy = _order(bob, 0, 0, true, 500e8, 10e8, 6);
        bytes memory item = _fillItem(sell, ALICE_PK, buy, BOB_PK, 10e8, 500e8, 0, 0);
        uint256 snap = vm.snapshotState();
        assertEq(_settleOne(item), INSUFFICIENT_MARGIN, "fresh price");
        vm.revertToState(snap);
        fEth.setAnswerAt(2000e8, block.timestamp - 3601);
        assertEq(_settleOne(item), 0, "reduce-only mode");
        // 10,000 - 20,000 - 10 (fee) + 5,000
        assertEq(ch.quoteBalance(alice, 0), -5_010e6);
        assertEq(_size(alice, 0, 0), 0);
        ch.settleBadDebt(alice, 0);
        assertEq(ch.unbackedDebt() + (10e6 + 2e6) - ch.feePool(), 5_010e6, "deficit socialised");
        _conserved();
    }

    /// @dev Dust collateral worth less than one quote atom at the discounted price (here 1 wei of WETH, which anyone
    ///      can deposit into any sub-account) must not make a bankrupt account impossible to clear: bad-debt
    ///      settlement needs the collateral gone, and collateral liquidation must be able to take it.
    function test_dustCollateralDoesNotBlockBadDebt() public {
        _depositWeth(alice, 0, 1); // 1 wei: 990 USD * 1e-18, floor 0 quote atoms
        fEth.setAnswer(990e8); // bankrupt
        vm.prank(carol);
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0); // tier 2: the whole position
        assertEq(_size(alice, 0, 0), 0);
        int256 q = ch.quoteBalance(alice, 0);
        assertLt(q, 0);
        vm.expectRevert(NoBadDebt.selector); // collateral still held
        ch.settleBadDebt(alice, 0);
        vm.prank(carol);
        (uint128 amount,) = ch.liquidateCollateral(alice, 0, 1, type(uint128).max, MAXU64, 0);
        assertEq(uint256(amount), 1);
        assertEq(ch.collateralBalance(alice, 0, 1), 0);
        assertEq(ch.collateralBalance(carol, 0, 1), 1);
        assertEq(ch.quoteBalance(alice, 0), q, "nothing paid for dust");
        ch.settleBadDebt(alice, 0);
        assertEq(ch.quoteBalance(alice, 0), 0);
        _conserved();
    }

    /// @dev The dust exception is for the whole balance only: a capped amount worth nothing still reverts.
    function test_collateralLiquidationOfNothingStillReverts() public {
        _depositWeth(alice, 0, 1e17); // 0.1 ETH: still bankrupt at 990
        fEth.setAnswer(990e8);
        vm.prank(carol);
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        assertTrue(ch.isLiquidatable(alice, 0));
        vm.prank(carol);
        vm.expectRevert(NothingToLiquidate.selector);
        ch.liquidateCollateral(alice, 0, 1, 1, MAXU64, 0); // 1 wei of a larger balance
    }

    /// @dev docs/trust-model.md "Oracles": an account needs the price of everything it holds, and anyone can deposit
    ///      into any account. A dust deposit of an asset whose feed is down (1 satoshi of WBTC) makes a liquidatable
    ///      account unliquidatable, and its fills ORACLE_UNAVAILABLE, until that feed returns.
    function test_dustOfADeadFeedAssetBlocksLiquidation() public {
        fEth.setAnswer(1020e8);
        assertTrue(ch.isLiquidatable(alice, 0));
        wbtc.mint(address(this), 1);
        wbtc.approve(address(ch), 1);
        ch.deposit(alice, 0, 2, 1);
        fBtc.setAnswerAt(int256(uint256(BTC_PX)) * 1e10, block.timestamp - 3601);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(2)));
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        // a fill that would raise alice's position needs BTC's price too
        assertEq(_settleOne(_simpleFill(0, true, 1020e8, 1e8, 3, 4)), ORACLE_UNAVAILABLE);
        // back with the feed
        fBtc.setAnswer(int256(uint256(BTC_PX)) * 1e10);
        vm.prank(carol);
        ch.liquidate(alice, 0, 0, MAXU64, MAXU64, 0);
        _conserved();
    }
}
