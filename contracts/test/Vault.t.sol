// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {FeeOnTransferToken, PausableToken} from "./mocks/FeeOnTransferToken.sol";
import {SettableFeed} from "../src/oracles/SettableFeed.sol";
import {Clearinghouse} from "../src/Clearinghouse.sol";
import {TestToken} from "../src/test-tokens/TestToken.sol";
import {Tier, MarketConfig, CollateralConfig, ForcedRequest} from "../src/interfaces/ICrossbookTypes.sol";

contract VaultTest is Fixture {
    // ------------------------------------------------------------------ deposits

    function test_depositCreditsAndEmits() public {
        usdc.mint(address(this), 10e6);
        usdc.approve(address(ch), 10e6);
        vm.expectEmit();
        emit Deposit(alice, 3, 0, 10e6);
        ch.deposit(alice, 3, 0, 10e6);
        assertEq(ch.quoteBalance(alice, 3), 10e6);
        _depositWeth(alice, 3, 2e18);
        assertEq(ch.collateralBalance(alice, 3, 1), 2e18);
        assertEq(ch.collateralConfig(1).totalDeposited, 2e18);
    }

    function test_depositCap() public {
        ch.setCollateralParams(1, 800_000, 900_000, 5e18);
        _depositWeth(alice, 0, 4e18);
        weth.mint(address(this), 2e18);
        weth.approve(address(ch), 2e18);
        vm.expectRevert(abi.encodeWithSelector(DepositCapExceeded.selector, uint16(1), uint256(6e18), uint256(5e18)));
        ch.deposit(alice, 0, 1, 2e18);
        ch.deposit(bob, 0, 1, 1e18);
        assertEq(ch.collateralConfig(1).totalDeposited, 5e18);
    }

    function test_depositRejectsBadInput() public {
        vm.expectRevert(abi.encodeWithSelector(UnknownAsset.selector, uint16(3)));
        ch.deposit(alice, 0, 3, 1);
        vm.expectRevert(ZeroAmount.selector);
        ch.deposit(alice, 0, 0, 0);
        vm.expectRevert(ZeroAddress.selector);
        ch.deposit(address(0), 0, 0, 1);
    }

    function test_feeOnTransferCreditsWhatArrived() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(18);
        ch.listCollateral(address(fot), 1, 500_000, 600_000, type(uint128).max);
        fot.mint(address(this), 100e18);
        fot.approve(address(ch), 100e18);
        vm.expectEmit();
        emit Deposit(alice, 0, 3, 99e18);
        ch.deposit(alice, 0, 3, 100e18);
        assertEq(ch.collateralBalance(alice, 0, 3), 99e18);
        assertEq(fot.balanceOf(address(ch)), 99e18);
    }

    function test_transferFailedRejectsWithoutChanges() public {
        PausableToken pt = new PausableToken();
        ch.listCollateral(address(pt), 1, 500_000, 600_000, type(uint128).max);
        pt.mint(address(this), 5e18);
        pt.approve(address(ch), 5e18);
        ch.deposit(alice, 0, 3, 5e18);
        pt.setPaused(true);
        bytes memory w = _withdrawItem(ALICE_PK, 0, 3, 1e18, 1, FAR);
        assertEq(_settleOne(w), TRANSFER_FAILED);
        assertEq(ch.collateralBalance(alice, 0, 3), 5e18);
        pt.setPaused(false);
        assertEq(_settleOne(w), 0);
        assertEq(pt.balanceOf(alice), 1e18);
    }

    function test_agentSetEvent() public {
        vm.expectEmit();
        emit AgentSet(alice, agent, true);
        vm.prank(alice);
        ch.setAgent(agent, true);
        assertTrue(ch.isAgent(alice, agent));
        assertFalse(ch.isAgent(bob, agent));
    }

    // ------------------------------------------------------------------ escape hatch

    function test_forcedWithdrawalAfterDelay() public {
        _depositQuote(alice, 0, 1000e6);
        vm.prank(alice);
        uint64 id = ch.requestForcedWithdrawal(0, 0, 400e6);
        assertEq(id, 1);
        ForcedRequest memory r = ch.forcedRequest(id);
        assertEq(r.executableAt, uint64(block.timestamp + DELAY));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TooEarly.selector, r.executableAt));
        ch.executeForcedWithdrawal(id);
        vm.warp(block.timestamp + DELAY);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(NotRequestOwner.selector, id));
        ch.executeForcedWithdrawal(id);
        vm.expectEmit();
        emit ForcedWithdrawalExecuted(id);
        vm.prank(alice);
        ch.executeForcedWithdrawal(id);
        assertEq(usdc.balanceOf(alice), 400e6);
        assertEq(ch.quoteBalance(alice, 0), 600e6);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(RequestNotPending.selector, id));
        ch.executeForcedWithdrawal(id);
    }

    function test_forcedWithdrawalHealthCheck() public {
        _depositQuote(alice, 0, 100_000e6);
        _depositQuote(bob, 0, 100_000e6);
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 40e8, 1, 1)), 0); // alice short 40
        vm.startPrank(alice);
        uint64 tooMuch = ch.requestForcedWithdrawal(0, 0, 97_000e6);
        uint64 tooBig = ch.requestForcedWithdrawal(0, 0, 1_000_000e6);
        vm.stopPrank();
        vm.warp(block.timestamp + DELAY);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        vm.startPrank(alice);
        vm.expectRevert(InsufficientMargin.selector);
        ch.executeForcedWithdrawal(tooMuch);
        vm.expectRevert(InsufficientBalance.selector);
        ch.executeForcedWithdrawal(tooBig);
        fEth.setAnswerAt(int256(uint256(ETH_PX)), 1);
        vm.expectRevert(abi.encodeWithSelector(OracleUnavailable.selector, uint16(0)));
        ch.executeForcedWithdrawal(tooMuch);
        vm.stopPrank();
    }

    function test_forcedItemExecutesBeforeDelay() public {
        _depositQuote(alice, 0, 1000e6);
        vm.prank(alice);
        uint64 id = ch.requestForcedWithdrawal(0, 0, 1500e6);
        // too large: rejected and left pending
        assertEq(_settleOne(_forcedItem(id)), INSUFFICIENT_BALANCE);
        assertTrue(ch.forcedRequest(id).pending);
        _depositQuote(alice, 0, 1000e6);
        uint64 seq = ch.nextSeq();
        vm.expectEmit();
        emit Withdrawn(alice, 0, 0, 1500e6, seq);
        assertEq(_settleOne(_forcedItem(id)), 0);
        assertEq(usdc.balanceOf(alice), 1500e6);
        assertFalse(ch.forcedRequest(id).pending);
        assertEq(_settleOne(_forcedItem(id)), REPLAYED);
        assertEq(_settleOne(_forcedItem(99)), REPLAYED);
    }

    function test_requestValidation() public {
        vm.expectRevert(abi.encodeWithSelector(UnknownAsset.selector, uint16(5)));
        ch.requestForcedWithdrawal(0, 5, 1);
        vm.expectRevert(ZeroAmount.selector);
        ch.requestForcedWithdrawal(0, 0, 0);
    }

    // ------------------------------------------------------------------ config validation

    function test_marketConfigValidation() public {
        MarketConfig memory c = _cfg(1, 1e6, 1e5, 1e15);
        c.tickSize = 0;
        vm.expectRevert(InvalidMarketConfig.selector);
        ch.listMarket(c);
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.lotSize = 0;
        vm.expectRevert(InvalidMarketConfig.selector);
        ch.listMarket(c);
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.maxFundingPpm = 1_000_001;
        vm.expectRevert(InvalidMarketConfig.selector);
        ch.listMarket(c);
        // caps not increasing
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[1].notionalCap = 1e12;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // mmf > imf
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[0].mmfPpm = 60_000;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // zero mmf
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[0].mmfPpm = 0;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // decreasing fractions
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[2].imfPpm = 90_000;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // imf > PPM
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[2].imfPpm = 1_000_001;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // no tiers / five tiers
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers = new Tier[](0);
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        c.tiers = new Tier[](5);
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // first cap zero with several tiers
        c = _cfg(1, 1e6, 1e5, 1e15);
        c.tiers[0].notionalCap = 0;
        vm.expectRevert(InvalidTiers.selector);
        ch.listMarket(c);
        // single tier: cap ignored (may be 0)
        c.tiers = new Tier[](1);
        c.tiers[0] = Tier(0, 100_000, 50_000);
        uint32 id = ch.listMarket(c);
        assertEq(id, 3);
        assertEq(ch.marketCount(), 4);
        MarketConfig memory got = ch.marketConfig(id);
        assertEq(got.tiers.length, 1);
        assertEq(got.tiers[0].imfPpm, 100_000);
        vm.expectRevert(abi.encodeWithSelector(UnknownMarket.selector, uint32(9)));
        ch.setMarketConfig(9, c);
        vm.prank(alice);
        vm.expectRevert();
        ch.listMarket(c);
    }

    function test_tooManyMarkets() public {
        MarketConfig memory c = _cfg(1, 1e6, 1e5, 1e15);
        for (uint256 i = 3; i < 32; ++i) {
            ch.listMarket(c);
        }
        vm.expectRevert(TooManyMarkets.selector);
        ch.listMarket(c);
    }

    function test_collateralValidation() public {
        TestToken t = new TestToken("T", "T", 18);
        vm.expectRevert(InvalidWeights.selector);
        ch.listCollateral(address(t), 1, 900_001, 900_000, 1);
        vm.expectRevert(InvalidWeights.selector);
        ch.listCollateral(address(t), 1, 0, 1_000_001, 1);
        vm.expectRevert(abi.encodeWithSelector(TokenAlreadyListed.selector, address(weth)));
        ch.listCollateral(address(weth), 1, 0, 0, 1);
        vm.expectRevert(abi.encodeWithSelector(TokenAlreadyListed.selector, address(usdc)));
        ch.listCollateral(address(usdc), 1, 0, 0, 1);
        vm.expectRevert(InvalidWeights.selector);
        ch.setCollateralParams(0, 900_000, 1_000_000, 1);
        ch.setCollateralParams(0, 1_000_000, 1_000_000, 10e6);
        vm.expectRevert(abi.encodeWithSelector(UnknownAsset.selector, uint16(3)));
        ch.setCollateralParams(3, 0, 0, 0);
        for (uint256 i = 3; i < 16; ++i) {
            ch.listCollateral(address(new TestToken("X", "X", 6)), 1, 0, 0, 1);
        }
        assertEq(ch.collateralCount(), 16);
        vm.expectRevert(TooManyAssets.selector);
        ch.listCollateral(address(t), 1, 0, 0, 1);
        vm.expectRevert(InvalidHaircut.selector);
        ch.setPnlHaircut(1_000_001);
    }

    function test_quoteMustHaveSixDecimals() public {
        TestToken t18 = new TestToken("T", "T", 18);
        vm.expectRevert(abi.encodeWithSelector(InvalidDecimals.selector, uint8(18)));
        new Clearinghouse(admin, address(oracle), address(t18), 1);
    }

    function test_views() public view {
        CollateralConfig memory q = ch.collateralConfig(0);
        assertEq(q.token, address(usdc));
        assertEq(q.decimals, 6);
        assertEq(ch.escapeDelay(), DELAY);
        assertEq(ch.pnlHaircut(), 500_000);
        assertEq(ch.oracle(), address(oracle));
        assertEq(ch.quoteToken(), address(usdc));
        assertEq(ch.nextSeq(), 1);
    }
}
