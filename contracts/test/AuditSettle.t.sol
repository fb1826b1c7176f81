// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Clearinghouse} from "../src/Clearinghouse.sol";
import {Order, ForcedRequest, MarketConfig} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Audit of batch settlement against a malicious operator (docs/trust-model.md): operator-crafted batches
///      that reuse orders across fills, flushes and batches, both encodings (order table and inline fills), the
///      packing limits, forged withdrawals and transfers, and conservation after each.
contract AuditSettleTest is Fixture {
    function setUp() public override {
        super.setUp();
        _depositQuote(alice, 0, 100_000e6);
        _depositQuote(bob, 0, 100_000e6);
        _depositQuote(carol, 0, 100_000e6);
        _depositWeth(carol, 0, 5e18);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev Conservation (docs/trust-model.md "Conservation") over every account these tests touch.
    function _conserved() internal view {
        address[3] memory owners = [alice, bob, carol];
        int256 q;
        uint256 w;
        for (uint256 i = 0; i < 3; ++i) {
            for (uint32 s = 0; s < 3; ++s) {
                q += ch.quoteBalance(owners[i], s);
                w += ch.collateralBalance(owners[i], s, 1);
            }
        }
        int256 rhs = q + int256(ch.insuranceFund()) + int256(ch.feePool()) + ch.fundingBalance(0)
            + ch.fundingBalance(1) + ch.fundingBalance(2);
        assertEq(int256(usdc.balanceOf(address(ch))) + int256(ch.unbackedDebt()), rhs, "quote conservation");
        assertEq(weth.balanceOf(address(ch)), w, "weth conservation");
    }

    /// @dev Settles the items verbatim (inline kind-1 fills, no order table); returns the reason per item.
    function _settleInline(bytes[] memory items) internal returns (uint8[] memory reasons) {
        bytes memory b = abi.encodePacked(ch.nextSeq(), uint16(items.length));
        for (uint256 i = 0; i < items.length; ++i) {
            b = bytes.concat(b, items[i]);
        }
        return _settleBatch(b, items.length);
    }

    function _both(bytes[] memory items) internal returns (uint8[] memory table, uint8[] memory inl) {
        uint256 snap = vm.snapshotState();
        table = _settle(items);
        _conserved();
        vm.revertToState(snap);
        inl = _settleInline(items);
        _conserved();
    }

    function _eqReasons(uint8[] memory got, uint8[] memory want, string memory what) internal pure {
        assertEq(got.length, want.length, what);
        for (uint256 i = 0; i < got.length; ++i) {
            assertEq(uint256(got[i]), uint256(want[i]), what);
        }
    }

    // ------------------------------------------------------------------ one order, many fills

    /// @dev The taker's 2 ETH order is filled 1 + 1, then once more: the per-batch nonce record must carry the
    ///      filled amount across the flush a withdrawal and a transfer force in between (both encodings).
    function test_orderReusedAcrossFlushesInOneBatch() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 2e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 10e8, 1);
        bytes[] memory items = new bytes[](7);
        items[0] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        items[1] = _withdrawItem(CAROL_PK, 0, 0, 1e6, 1, FAR);
        items[2] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        items[3] = _transferItem(CAROL_PK, 0, 1, 0, 1e6, 2);
        items[4] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0); // beyond alice's size
        items[5] = _fundingItem(0, 10);
        items[6] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0); // still beyond, after a funding flush
        uint8[] memory want = new uint8[](7);
        want[4] = OVERFILL;
        want[6] = OVERFILL;
        (uint8[] memory a, uint8[] memory b) = _both(items);
        _eqReasons(a, want, "table");
        _eqReasons(b, want, "inline");
        assertEq(_size(alice, 0, 0), 2e8);
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(ch.filledAmount(bob, 1), 2e8);
        // and in the next batch
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        _conserved();
    }

    /// @dev One signed order on the maker side of one fill and the taker side of the next (the two per-side copies
    ///      of the order, _readOrderT/_readOrderK, share one nonce record): the sum over both sides stays within
    ///      its size.
    function test_orderOnBothSidesSharesItsBudget() public {
        Order memory x = _order(bob, 0, 0, false, ETH_PX, 2e8, 5);
        Order memory a = _order(alice, 0, 0, true, ETH_PX, 10e8, 1);
        Order memory c = _order(carol, 0, 0, true, ETH_PX, 10e8, 1);
        bytes[] memory items = new bytes[](4);
        items[0] = _fillItem(a, ALICE_PK, x, BOB_PK, 15e7, ETH_PX, 0, 0); // x as maker (side k)
        items[1] = _fillItem(x, BOB_PK, c, CAROL_PK, 1e8, ETH_PX, 0, 0); // x as taker (side t): 2.5 > 2
        items[2] = _fillItem(x, BOB_PK, c, CAROL_PK, 5e7, ETH_PX, 0, 0); // exactly the rest: spends x
        items[3] = _fillItem(a, ALICE_PK, x, BOB_PK, 1e5, ETH_PX, 0, 0); // x as maker again: spent
        uint8[] memory want = new uint8[](4);
        want[1] = OVERFILL;
        want[3] = OVERFILL;
        (uint8[] memory r1, uint8[] memory r2) = _both(items);
        _eqReasons(r1, want, "table");
        _eqReasons(r2, want, "inline");
        assertEq(_size(bob, 0, 0), -2e8);
        assertEq(ch.filledAmount(bob, 5), SPENT);
    }

    /// @dev Five partially filled orders of one owner whose nonces share a nonce-state word (two inline lanes,
    ///      three own lanes), over three batches with flushes in between: every nonce keeps its own amount and
    ///      none can be filled past its size.
    function test_partialNoncesSharingAWord() public {
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 100e8, 1000);
        bytes[] memory items = new bytes[](6);
        for (uint256 round = 0; round < 3; ++round) {
            for (uint64 i = 0; i < 5; ++i) {
                Order memory t = _order(alice, 0, 0, true, ETH_PX, 3e8, 3 + i * 31); // nonces 3..127: one word
                items[i] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
            }
            items[5] = _withdrawItem(CAROL_PK, 0, 0, 1e6, uint64(10 + round), FAR);
            uint8[] memory r = _settle(items);
            for (uint256 i = 0; i < 6; ++i) {
                assertEq(uint256(r[i]), 0, "applied");
            }
            for (uint64 i = 0; i < 5; ++i) {
                assertEq(ch.filledAmount(alice, 3 + i * 31), round == 2 ? SPENT : (round + 1) * 1e8, "filled");
            }
        }
        for (uint64 i = 0; i < 5; ++i) {
            Order memory t = _order(alice, 0, 0, true, ETH_PX, 3e8, 3 + i * 31);
            assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        }
        assertEq(_size(alice, 0, 0), 15e8);
        assertEq(ch.filledAmount(bob, 1000), 15e8);
        _conserved();
    }

    // ------------------------------------------------------------------ signatures and domains

    /// @dev An order signed for another Clearinghouse (same chain, other verifying contract) is a forgery here.
    function test_otherVerifyingContractRejected() public {
        Clearinghouse other = new Clearinghouse(admin, address(oracle), address(usdc), DELAY);
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        bytes memory wrongT = abi.encodePacked(_packOrder(t), _sig(ALICE_PK, other.orderDigest(t)));
        bytes memory item =
            abi.encodePacked(uint8(1), wrongT, _signedOrder(m, BOB_PK), uint64(1e8), ETH_PX, uint32(0), uint32(0));
        assertEq(_settleOne(item), BAD_SIGNATURE);
        // a withdrawal signed for the other contract
        bytes32 d = other.withdrawalDigest(alice, 0, 0, 1e6, 1, FAR);
        bytes memory w = abi.encodePacked(uint8(2), alice, uint32(0), uint16(0), uint128(1e6), uint64(1), FAR, _sig(ALICE_PK, d));
        assertEq(_settleOne(w), BAD_SIGNATURE);
        assertEq(_size(alice, 0, 0), 0);
        assertEq(ch.quoteBalance(alice, 0), 100_000e6);
    }

    /// @dev v outside {27, 28} (0/1 encodings, which ecrecover would also refuse) and a zeroed signature.
    function test_badRecoveryIdsRejected() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        bytes memory item = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        uint8 v = uint8(item[1 + 65 + 64]);
        item[1 + 65 + 64] = bytes1(v - 27);
        assertEq(_settleOne(item), BAD_SIGNATURE);
        bytes memory zero = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        for (uint256 i = 0; i < 65; ++i) {
            zero[1 + 65 + i] = 0;
        }
        assertEq(_settleOne(zero), BAD_SIGNATURE);
        // owner address(0) with a zeroed signature: recover gives 0, which must not match
        Order memory z = _order(address(0), 0, 0, true, ETH_PX, 1e8, 1);
        bytes memory zi = abi.encodePacked(
            uint8(1), _packOrder(z), new bytes(65), _signedOrder(m, BOB_PK), uint64(1e8), ETH_PX, uint32(0), uint32(0)
        );
        assertEq(_settleOne(zi), BAD_SIGNATURE);
        assertEq(_size(bob, 0, 0), 0);
    }

    // ------------------------------------------------------------------ packing limits

    /// @dev Sizes and prices at the wire's limits (uint64) with balances near the int128 quote range: the batch must
    ///      go through with the item rejected (an open notional beyond int88), never revert.
    function test_extremeFillRejectedNotReverted() public {
        uint256 big = uint256(1) << 120;
        _depositQuote(alice, 1, big);
        _depositQuote(bob, 1, big);
        uint64 lotE = 1e5;
        uint64 tickE = 1e6;
        uint64 size = type(uint64).max / lotE * lotE;
        uint64 price = type(uint64).max / tickE * tickE;
        Order memory t = Order(alice, 1, 0, true, false, price, size, 1, FAR, type(uint32).max);
        Order memory m = Order(bob, 1, 0, false, false, price, size, 1, FAR, type(uint32).max);
        bytes[] memory items = new bytes[](2);
        items[0] = _fillItem(t, ALICE_PK, m, BOB_PK, size, price, type(uint32).max, type(uint32).max);
        items[1] = _simpleFill(0, true, ETH_PX, 1e8, 7, 7); // the batch goes on
        (uint8[] memory a, uint8[] memory b) = _both(items);
        assertEq(uint256(a[0]), INVALID_ITEM);
        assertEq(uint256(b[0]), INVALID_ITEM);
        assertEq(uint256(a[1]), 0);
        assertEq(uint256(b[1]), 0);
        assertEq(_size(alice, 1, 0), 0);
        assertEq(ch.quoteBalance(alice, 1), int256(big));
    }

    /// @dev The largest fill that fits the storage ranges (open notional just inside int88), with fee rates at the
    ///      signed maximum: applied exactly, read back exactly, conserved.
    function test_largeFillAtTheRangesApplies() public {
        uint256 big = uint256(1) << 100;
        _depositQuote(alice, 1, big);
        _depositQuote(bob, 1, big);
        uint64 size = 1e15; // 1e7 ETH, the market's open-interest cap
        uint64 price = 1e15; // 10,000,000 USD
        uint256 cash = uint256(size) * price / 1e10; // 1e20 quote atoms: a wide lane, inside int88
        Order memory t = Order(alice, 1, 0, true, false, price, size, 1, FAR, 2000);
        Order memory m = Order(bob, 1, 0, false, false, price, size, 1, FAR, 3000);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, size, price, 2000, 3000)), 0);
        (int256 s, int256 on,) = ch.position(alice, 1, 0);
        assertEq(s, int256(uint256(size)));
        assertEq(on, int256(cash));
        assertEq(ch.quoteBalance(alice, 1), int256(big) - int256(cash) - int256(cash * 2000 / PPM));
        assertEq(ch.quoteBalance(bob, 1), int256(big) + int256(cash) - int256(cash * 3000 / PPM));
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(ch.openInterest(0), size);
        _conserved();
    }

    // ------------------------------------------------------------------ withdrawals and transfers

    /// @dev Withdrawal and transfer items the owner did not sign, replays, and amounts at the field's limit.
    function test_forgedAndOversizedFundsItems() public {
        // alice's signature over a withdrawal from bob's account
        bytes32 d = ch.withdrawalDigest(bob, 0, 0, 1e6, 1, FAR);
        bytes memory w = abi.encodePacked(uint8(2), bob, uint32(0), uint16(0), uint128(1e6), uint64(1), FAR, _sig(ALICE_PK, d));
        assertEq(_settleOne(w), BAD_SIGNATURE);
        // alice's signed withdrawal with the sub-account changed
        bytes memory w2 = _withdrawItem(ALICE_PK, 0, 0, 1e6, 2, FAR);
        w2[1 + 23] = bytes1(uint8(1));
        assertEq(_settleOne(w2), BAD_SIGNATURE);
        // alice's signature over a transfer between bob's sub-accounts
        bytes32 td = ch.transferDigest(bob, 0, 1, 0, 1e6, 1, FAR);
        bytes memory tr = abi.encodePacked(uint8(3), bob, uint32(0), uint32(1), uint16(0), uint128(1e6), uint64(1), FAR, _sig(ALICE_PK, td));
        assertEq(_settleOne(tr), BAD_SIGNATURE);
        // an approved agent cannot move funds between sub-accounts either
        vm.prank(alice);
        ch.setAgent(agent, true);
        bytes32 ad = ch.transferDigest(alice, 0, 1, 0, 1e6, 3, FAR);
        bytes memory byAgent = abi.encodePacked(uint8(3), alice, uint32(0), uint32(1), uint16(0), uint128(1e6), uint64(3), FAR, _sig(AGENT_PK, ad));
        assertEq(_settleOne(byAgent), BAD_SIGNATURE);
        // amounts at the field's limit (uint128): refused, never reverted
        uint128 max = type(uint128).max;
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, max, 4, FAR)), INSUFFICIENT_BALANCE);
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 0, 1, max, 4, FAR)), INSUFFICIENT_BALANCE);
        assertEq(_settleOne(_transferItem(ALICE_PK, 0, 1, 0, max, 5)), INSUFFICIENT_BALANCE);
        assertEq(_settleOne(_transferItem(CAROL_PK, 0, 1, 1, max, 5)), INSUFFICIENT_BALANCE);
        // a transfer replayed, in the same batch and in the next
        bytes memory ok = _transferItem(CAROL_PK, 0, 1, 1, 1e18, 6);
        bytes[] memory items = new bytes[](2);
        items[0] = ok;
        items[1] = ok;
        uint8[] memory r = _settle(items);
        assertEq(uint256(r[0]), 0);
        assertEq(uint256(r[1]), REPLAYED);
        assertEq(_settleOne(ok), REPLAYED);
        assertEq(ch.collateralBalance(carol, 1, 1), 1e18);
        assertEq(ch.collateralBalance(carol, 0, 1), 4e18);
        assertEq(ch.quoteBalance(alice, 0), 100_000e6);
        assertEq(ch.quoteBalance(bob, 0), 100_000e6);
        _conserved();
    }

    // ------------------------------------------------------------------ escape hatch

    /// @dev The operator cannot consume a forced withdrawal by sequencing it while it fails, nor replay it; the
    ///      owner executes it after the delay, once.
    function test_forcedWithdrawalCannotBeBurnedByTheOperator() public {
        vm.prank(alice);
        uint64 id = ch.requestForcedWithdrawal(0, 0, 150_000e6); // more than alice has (for now)
        assertEq(_settleOne(_forcedItem(id)), INSUFFICIENT_BALANCE);
        assertTrue(ch.forcedRequest(id).pending, "still pending");
        // an unknown request id is refused, not a revert
        assertEq(_settleOne(_forcedItem(id + 100)), REPLAYED);
        _depositQuote(alice, 0, 60_000e6);
        vm.warp(block.timestamp + DELAY);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(NotRequestOwner.selector, id));
        ch.executeForcedWithdrawal(id);
        uint256 before = usdc.balanceOf(alice);
        vm.prank(alice);
        ch.executeForcedWithdrawal(id);
        assertEq(usdc.balanceOf(alice) - before, 150_000e6);
        assertEq(ch.quoteBalance(alice, 0), 10_000e6);
        assertEq(_settleOne(_forcedItem(id)), REPLAYED);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(RequestNotPending.selector, id));
        ch.executeForcedWithdrawal(id);
        _conserved();
    }

    /// @dev docs/trust-model.md's limit of the escape hatch: the hatch only withdraws; it cannot close a position,
    ///      so the margin an open position needs stays in the contract while the operator refuses to match.
    function test_escapeHatchLeavesMarginOfOpenPositions() public {
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 40e8, 1, 1)), 0); // alice short 40 ETH, 80,000 notional
        int256 q = ch.quoteBalance(alice, 0);
        assertEq(q, 179_960e6);
        vm.prank(alice);
        uint64 all = ch.requestForcedWithdrawal(0, 0, uint128(uint256(q)));
        vm.warp(block.timestamp + DELAY);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        vm.prank(alice);
        vm.expectRevert(InsufficientMargin.selector);
        ch.executeForcedWithdrawal(all);
        // the excess over the initial requirement (tier 1: 5% of 80,000 = 4,000) is withdrawable
        int256 ih = ch.health(alice, 0).initialHealth;
        assertEq(ih, 95_960e6);
        vm.prank(alice);
        uint64 part = ch.requestForcedWithdrawal(0, 0, uint128(uint256(ih)));
        vm.warp(block.timestamp + DELAY);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        vm.prank(alice);
        ch.executeForcedWithdrawal(part);
        assertEq(ch.health(alice, 0).initialHealth, 0);
        // 84,000 of quote stays behind the open position until someone matches it
        assertEq(ch.quoteBalance(alice, 0), 84_000e6);
        assertEq(_size(alice, 0, 0), -40e8);
        _conserved();
    }

    // ------------------------------------------------------------------ funding

    /// @dev docs/trust-model.md: in a market listed with fundingPeriod 0 (the fixture's) the contract clamps each
    ///      FUNDING item to maxFundingPpm and nothing limits how many the operator sequences: 100 items at the
    ///      clamp in one batch move 100 times the per-item bound from the longs to the shorts (10% of the
    ///      notional). test_fundingBudgetBoundsRepeats: the same with the default listing's period.
    function test_fundingClampIsPerItemOnly() public {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), 0); // alice long 1 ETH, bob short
        bytes[] memory items = new bytes[](100);
        for (uint256 i = 0; i < 100; ++i) {
            items[i] = _fundingItem(0, type(int32).max);
        }
        uint8[] memory r = _settle(items);
        for (uint256 i = 0; i < 100; ++i) {
            assertEq(uint256(r[i]), 0);
        }
        // 1000 ppm of 2000 USD per item: 2 USD per ETH, 200 USD after 100 items
        assertEq(ch.cumulativeFunding(0), 100 * 2e8);
        assertEq(ch.health(alice, 0).equity, 100_000e6 - 1e6 - 200e6);
        _conserved();
    }

    /// @dev docs/trust-model.md's figures for a market with the default fundingPeriod (3600 s): the operator's
    ///      repeats move at most the 24 banked periods at once (2.4% of the notional at 1,000 ppm), then one
    ///      period's worth per hour; the longs lose exactly that, conserved.
    function test_fundingBudgetBoundsRepeats() public {
        MarketConfig memory cfg = _cfg(1, 1e6, 1e5, 1e15); // a second ETH market, listed with the default period
        cfg.fundingPeriod = 3600;
        uint32 m = ch.listMarket(cfg);
        Order memory t = _order(alice, 0, m, true, ETH_PX, 1e8, 1);
        Order memory k = _order(bob, 0, m, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, k, BOB_PK, 1e8, ETH_PX, 500, 100)), 0); // alice long 1 ETH
        bytes[] memory items = new bytes[](100);
        for (uint256 i = 0; i < 100; ++i) {
            items[i] = _fundingItem(m, type(int32).max);
        }
        _settle(items);
        assertEq(ch.cumulativeFunding(m), 24 * 2e8, "the bank: 24 periods");
        _settle(items);
        assertEq(ch.cumulativeFunding(m), 24 * 2e8, "nothing left");
        vm.warp(block.timestamp + 3600);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        _settle(items);
        assertEq(ch.cumulativeFunding(m), 25 * 2e8, "one period later");
        assertEq(ch.health(alice, 0).equity, 100_000e6 - 1e6 - 50e6);
        _conserved();
    }
}
