// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {MarketConfig} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev The funding time budget (SettlementModule._fundingBudget, docs/protocol.md "Funding"): with a
///      fundingPeriod, FUNDING items move a market's index by at most maxFundingPpm per period on average, however
///      many items the operator sends; up to 24 periods of unused budget carry over (a listing starts with them);
///      honest funding (one item per period, within the clamp) is never cut.
contract FundingBudgetTest is Fixture {
    uint32 constant PERIOD = 3600;
    int32 constant MAX = 1000; // Fixture's maxFundingPpm
    int256 constant STEP = 2e8; // 1000 ppm of ETH_PX: the index move of one full item

    function setUp() public override {
        super.setUp();
        _depositQuote(alice, 0, 100_000e6);
        _depositQuote(bob, 0, 100_000e6);
        MarketConfig memory c = _cfg(1, 1e6, 1e5, 1e15);
        c.fundingPeriod = PERIOD;
        ch.setMarketConfig(0, c);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), 0); // alice long 1 ETH, bob short 1 ETH
    }

    /// @dev Moves block time on and keeps the oracle fresh (its heartbeat is one hour).
    function _later(uint256 dt) internal {
        vm.warp(block.timestamp + dt);
        fEth.setAnswer(int256(uint256(ETH_PX)));
    }

    function _items(uint256 n, int32 rate) internal pure returns (bytes[] memory items) {
        items = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            items[i] = _fundingItem(0, rate);
        }
    }

    function _conserved() internal view {
        int256 rhs = ch.quoteBalance(alice, 0) + ch.quoteBalance(bob, 0) + int256(ch.insuranceFund())
            + int256(ch.feePool()) + ch.fundingBalance(0);
        assertEq(int256(usdc.balanceOf(address(ch))) + int256(ch.unbackedDebt()), rhs, "quote conservation");
    }

    function test_repeatedItemsMoveOnlyWhatElapsedTimeAllows() public {
        // setMarketConfig starts the budget at the old clock (the listing, just now): nothing to spend yet
        int256 cum0 = ch.cumulativeFunding(0);
        _settle(_items(100, type(int32).max));
        assertEq(ch.cumulativeFunding(0), cum0, "no budget yet");
        _later(PERIOD);
        uint8[] memory r = _settle(_items(100, type(int32).max));
        for (uint256 i = 0; i < 100; ++i) {
            assertEq(uint256(r[i]), 0); // clamped, not rejected
        }
        assertEq(ch.cumulativeFunding(0), cum0 + STEP, "one period: one full item");
        _later(PERIOD / 2);
        _settle(_items(10, -type(int32).max));
        assertEq(ch.cumulativeFunding(0), cum0 + STEP - STEP / 2, "half a period: half an item, either sign");
        // alice paid one and a half items' worth minus the half she got back: 1 USD per ETH
        assertEq(ch.health(alice, 0).equity, 100_000e6 - 1e6 - 1e6);
        _conserved();
    }

    function test_theClampedRateIsWhatFundingUpdatedCarries() public {
        _later(PERIOD / 4);
        int256 cum0 = ch.cumulativeFunding(0);
        vm.expectEmit();
        emit FundingUpdated(0, 250, cum0 + STEP / 4);
        _settleOne(_fundingItem(0, MAX));
        vm.expectEmit();
        emit FundingUpdated(0, 0, cum0 + STEP / 4);
        _settleOne(_fundingItem(0, MAX));
    }

    function test_backlogIsCappedAt24Periods() public {
        for (uint256 d = 0; d < 100; ++d) {
            _later(1 days); // a long settlement outage (and a fresh price each day)
        }
        int256 cum0 = ch.cumulativeFunding(0);
        _settle(_items(100, MAX));
        assertEq(ch.cumulativeFunding(0), cum0 + 24 * STEP);
        _conserved();
    }

    function test_aListingStartsWithAFullBudget() public {
        MarketConfig memory c = _cfg(1, 1e6, 1e5, 1e15);
        c.fundingPeriod = PERIOD;
        uint32 m = ch.listMarket(c);
        bytes[] memory items = new bytes[](30);
        for (uint256 i = 0; i < 30; ++i) {
            items[i] = _fundingItem(m, MAX);
        }
        _settle(items);
        assertEq(ch.cumulativeFunding(m), 24 * STEP, "24 whole items, nothing left for the next six");
        assertEq(ch.marketConfig(m).fundingPeriod, PERIOD);
    }

    function test_aRejectedItemSpendsNoBudget() public {
        _later(PERIOD);
        int256 top = int256(type(int88).max) - STEP / 2; // a full item would leave the index's range
        ch.harnessSetCumulativeFunding(0, top);
        assertEq(_settleOne(_fundingItem(0, MAX)), INVALID_ITEM);
        ch.harnessSetCumulativeFunding(0, 0);
        _settleOne(_fundingItem(0, -MAX)); // the whole period is still there
        assertEq(ch.cumulativeFunding(0), -STEP);
    }

    function test_periodZeroKeepsThePerItemClampOnly() public {
        MarketConfig memory c = _cfg(1, 1e6, 1e5, 1e15);
        ch.setMarketConfig(0, c); // fundingPeriod 0
        int256 cum0 = ch.cumulativeFunding(0);
        _settle(_items(5, MAX));
        assertEq(ch.cumulativeFunding(0), cum0 + 5 * STEP);
        assertEq(ch.marketConfig(0).fundingPeriod, 0);
    }

    /// @dev Honest funding: one item per period (or later), each within the clamp, is applied exactly.
    function testFuzz_honestFundingIsNeverCut(int32[8] memory rates, uint16[8] memory lateness) public {
        _later(PERIOD); // the budget setMarketConfig started at zero
        int256 cum = ch.cumulativeFunding(0);
        for (uint256 i = 0; i < 8; ++i) {
            int32 rate = int32(boundInt(rates[i], -MAX, MAX));
            vm.expectEmit();
            cum += int256(rate) * int256(uint256(ETH_PX)) / 1e6;
            emit FundingUpdated(0, rate, cum);
            assertEq(_settleOne(_fundingItem(0, rate)), 0);
            _later(PERIOD + uint256(lateness[i]) % 600);
        }
        _conserved();
    }

    /// @dev Whatever the operator sends and whenever, the index moves by at most maxFundingPpm per period of
    ///      block time since the budget started, plus the one period a listing starts with.
    function testFuzz_operatorCannotOutrunTheBudget(int32[6] memory rates, uint16[6] memory gaps, uint8[6] memory reps)
        public
    {
        uint256 t0 = block.timestamp;
        int256 cum0 = ch.cumulativeFunding(0);
        for (uint256 i = 0; i < 6; ++i) {
            _settle(_items(1 + uint256(reps[i]) % 8, rates[i]));
            int256 moved = ch.cumulativeFunding(0) - cum0;
            if (moved < 0) moved = -moved;
            assertLe(uint256(moved), (block.timestamp - t0) * uint256(STEP) / PERIOD);
            _later(gaps[i]);
        }
        _conserved();
    }
}
