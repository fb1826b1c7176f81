// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Order} from "../src/interfaces/ICrossbookTypes.sol";
import {MarginMath} from "../src/lib/MarginMath.sol";

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

    /// @dev docs/trust-model.md, reduce-only mode (protocol §9.8): with the market's oracle down, a fill where both
    ///      sides strictly reduce is applied only if both sides stay solvent (maintenance health >= 0) with the
    ///      market priced at the fill price. A close signed with a wide protection price, filled far below the market,
    ///      would leave alice with a deficit the system (insurance fund, fee pool, unbacked debt) would carry while
    ///      the counterparty kept the gain: it is refused, and nothing changes.
    function test_reduceOnlyModeRefusesACloseThatLeavesADeficit() public {
        Order memory sell = _order(alice, 0, 0, false, 500e8, 10e8, 5); // a close with a wide protection price
        sell.reduceOnly = true;
        Order memory buy = _order(bob, 0, 0, true, 500e8, 10e8, 6);
        bytes memory item = _fillItem(sell, ALICE_PK, buy, BOB_PK, 10e8, 500e8, 0, 0);
        uint256 snap = vm.snapshotState();
        assertEq(_settleOne(item), INSUFFICIENT_MARGIN, "fresh price");
        vm.revertToState(snap);
        fEth.setAnswerAt(2000e8, block.timestamp - 3601);
        int256 qa = ch.quoteBalance(alice, 0);
        int256 qb = ch.quoteBalance(bob, 0);
        // at 500 alice's close realizes 10 x (500 - 2000) = -15,000 against ~10,000 of equity
        assertEq(_settleOne(item), INSUFFICIENT_MARGIN, "reduce-only mode");
        assertEq(_size(alice, 0, 0), 10e8);
        assertEq(_size(bob, 0, 0), -10e8);
        assertEq(ch.quoteBalance(alice, 0), qa);
        assertEq(ch.quoteBalance(bob, 0), qb);
        vm.expectRevert(NoBadDebt.selector);
        ch.settleBadDebt(alice, 0);
        _conserved();
    }

    /// @dev The reduce-only mode's test is exactly "maintenance health after the fill >= 0 at the fill price", on both
    ///      sides: alice closes `closed` of her 10 ETH long at `px` (bob's short shrinks as much) with the oracle
    ///      stale; the expected outcome is computed from the health view at a fresh price px before the fill (equity
    ///      at the fill price falls by the fee alone; the requirement is the remaining position's, first tier).
    function testFuzz_reduceOnlyModeSolventAtFillPrice(uint256 pxSeed, bool half) public {
        uint64 px = uint64(bound(pxSeed, 700, 2600)) * 1e6 * 100; // 700..2600 USD in steps of 1 USD
        uint64 closed = half ? 5e8 : 10e8;
        fEth.setAnswer(int256(uint256(px)));
        bool aliceOk = _solventAfter(alice, 10e8 - closed, px, closed, 500);
        bool bobOk = _solventAfter(bob, 10e8 - closed, px, closed, 100);
        fEth.setAnswerAt(int256(uint256(ETH_PX)), block.timestamp - 3601); // stale: reduce-only mode
        uint8 r = _settleOne(_simpleFill(0, false, px, closed, 7, 8));
        assertEq(r, aliceOk && bobOk ? 0 : INSUFFICIENT_MARGIN);
        assertEq(_size(alice, 0, 0), r == 0 ? int256(uint256(10e8 - closed)) : int256(10e8));
        _conserved();
    }

    function _solventAfter(address who, uint256 left, uint64 px, uint64 closed, uint256 feePpm)
        private
        view
        returns (bool)
    {
        int256 equity = ch.health(who, 0).equity;
        uint256 fee = MarginMath.fee(MarginMath.tradeCash(closed, px), feePpm);
        uint256 n = MarginMath.notional(int256(left), px); // < 1e12: tier 0 (3% maintenance)
        assertTrue(n < 1e12, "tier 0");
        uint256 rMm = (n * 30_000 + 999_999) / 1_000_000;
        return equity - int256(fee) >= int256(rMm);
    }

    /// @dev In reduce-only mode a fill still needs every other price its two accounts' holdings need: alice also holds
    ///      BTC, whose price is bad, so her ETH close cannot be tested for solvency and waits.
    function test_reduceOnlyModeNeedsTheOtherPrices() public {
        assertEq(_settleOne(_simpleFill(1, true, 60000e8, 1e4, 11, 12)), 0); // a small BTC long
        fEth.setAnswerAt(int256(uint256(ETH_PX)), block.timestamp - 3601);
        uint256 snap = vm.snapshotState();
        assertEq(_settleOne(_simpleFill(0, false, 2000e8, 1e8, 13, 14)), 0, "other prices good");
        vm.revertToState(snap);
        fBtc.setAnswer(0);
        assertEq(_settleOne(_simpleFill(0, false, 2000e8, 1e8, 13, 14)), ORACLE_UNAVAILABLE, "BTC price bad");
        assertEq(_size(alice, 0, 0), 10e8);
        _conserved();
    }

    /// @dev The fill price stands in for the market's price only in that one test: the next item of the same batch
    ///      that needs the market's price (an increase) still finds it unavailable, and a later close is tested at
    ///      its own fill price.
    function test_reduceOnlyModeFillPriceIsNoOraclePrice() public {
        fEth.setAnswerAt(int256(uint256(ETH_PX)), block.timestamp - 3601);
        bytes[] memory items = new bytes[](3);
        items[0] = _simpleFill(0, false, 1900e8, 1e8, 21, 22); // close 1 at 1900: solvent
        items[1] = _simpleFill(0, true, 1900e8, 1e8, 23, 24); // an increase: needs the oracle
        items[2] = _simpleFill(0, false, 500e8, 9e8, 25, 26); // close the rest at 500: a deficit
        uint8[] memory r = _settle(items);
        assertEq(r[0], 0);
        assertEq(r[1], ORACLE_UNAVAILABLE);
        assertEq(r[2], INSUFFICIENT_MARGIN);
        assertEq(_size(alice, 0, 0), 9e8);
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
