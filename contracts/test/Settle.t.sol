// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Order, Health} from "../src/interfaces/ICrossbookTypes.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

contract SettleTest is Fixture {
    function setUp() public override {
        super.setUp();
        _depositQuote(alice, 0, 100_000e6);
        _depositQuote(bob, 0, 100_000e6);
    }

    // ------------------------------------------------------------------ happy path

    function test_fillAppliesBothSides() public {
        // alice buys 1 ETH at 2000 from bob; taker fee 500 ppm, maker fee 100 ppm
        uint8 r = _settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1));
        assertEq(r, 0, "reason");
        (int256 sa, int256 ona, int256 snapA) = ch.position(alice, 0, 0);
        (int256 sb, int256 onb,) = ch.position(bob, 0, 0);
        assertEq(sa, 1e8);
        assertEq(sb, -1e8);
        assertEq(ona, 2000e6);
        assertEq(onb, -2000e6);
        assertEq(snapA, 0);
        // cash = 2000e6; fees 1e6 and 0.2e6
        assertEq(ch.quoteBalance(alice, 0), 100_000e6 - 2000e6 - 1e6);
        assertEq(ch.quoteBalance(bob, 0), 100_000e6 + 2000e6 - 200_000);
        assertEq(ch.feePool(), 1_200_000);
        assertEq(ch.openInterest(0), 1e8);
        // both orders filled completely in one go: their nonces are spent (docs/protocol.md §4)
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(ch.filledAmount(bob, 1), SPENT);
        assertEq(ch.nextSeq(), 2);
    }

    function test_batchSettledEventCounts() public {
        bytes[] memory items = new bytes[](3);
        items[0] = _simpleFill(0, true, ETH_PX, 1e8, 1, 1);
        items[1] = _simpleFill(0, true, ETH_PX, 1e8, 1, 1); // overfill
        items[2] = _fundingItem(0, 10);
        uint64 first = ch.nextSeq();
        bytes memory b = _batch(items);
        vm.expectEmit();
        emit ItemRejected(first + 1, OVERFILL);
        vm.expectEmit();
        emit FundingUpdated(0, 10, 2000e8 * 10 / 1e6);
        vm.expectEmit();
        emit BatchSettled(first, 3, 1);
        vm.prank(operator);
        ch.settle(b);
    }

    function test_closeAndFlipOpenNotional() public {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 3e8, 1, 1)), 0);
        // alice sells 1 at 2100: reduce, on = trunc(6000e6 * 2 / 3) = 4000e6
        assertEq(_settleOne(_simpleFill(0, false, 2100e8, 1e8, 2, 2)), 0);
        (int256 s, int256 on,) = ch.position(alice, 0, 0);
        assertEq(s, 2e8);
        assertEq(on, 4000e6);
        // alice sells 5 at 2200: flip to -3, on = trunc(-11000e6 * -3 / -5) = -6600e6
        assertEq(_settleOne(_simpleFill(0, false, 2200e8, 5e8, 3, 3)), 0);
        (s, on,) = ch.position(alice, 0, 0);
        assertEq(s, -3e8);
        assertEq(on, -6600e6);
        // bob is +3 long now; OI counts longs
        assertEq(ch.openInterest(0), 3e8);
        // alice buys 3 back at 2000: closes, on = 0
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 3e8, 4, 4)), 0);
        (s, on,) = ch.position(alice, 0, 0);
        assertEq(s, 0);
        assertEq(on, 0);
        assertEq(ch.openInterest(0), 0);
    }

    // ------------------------------------------------------------------ agents and signatures

    function test_agentSignedOrderAcceptedAndRevoked() public {
        vm.prank(alice);
        ch.setAgent(agent, true);
        assertTrue(ch.isAgent(alice, agent));
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, AGENT_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0);
        vm.prank(alice);
        ch.setAgent(agent, false);
        t.nonce = 2;
        m.nonce = 2;
        assertEq(_settleOne(_fillItem(t, AGENT_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), BAD_SIGNATURE);
    }

    function test_forgedSignatureRejected() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, CAROL_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), BAD_SIGNATURE);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, CAROL_PK, 1e8, ETH_PX, 0, 0)), BAD_SIGNATURE);
        // tampered field after signing
        bytes memory item = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        item[1 + 44] = bytes1(uint8(item[1 + 44]) ^ 1); // size byte of the taker order
        assertEq(_settleOne(item), BAD_SIGNATURE);
        // high-s signature
        bytes memory good = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        _flipS(good, 1 + 65);
        assertEq(_settleOne(good), BAD_SIGNATURE);
        assertEq(_size(alice, 0, 0), 0);
    }

    function _flipS(bytes memory item, uint256 sigOff) internal pure {
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        uint256 s;
        assembly {
            s := mload(add(add(item, 32), add(sigOff, 32)))
        }
        s = n - s;
        uint8 v = uint8(item[sigOff + 64]);
        assembly {
            mstore(add(add(item, 32), add(sigOff, 32)), s)
        }
        item[sigOff + 64] = bytes1(v == 27 ? 28 : 27);
    }

    function test_wrongChainIdDomainRejected() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        uint256 realChain = block.chainid;
        vm.chainId(realChain + 1);
        bytes memory wrongT = _signedOrder(t, ALICE_PK); // digest computed for another chain id
        vm.chainId(realChain);
        bytes memory item = abi.encodePacked(uint8(1), wrongT, _signedOrder(m, BOB_PK), uint64(1e8), ETH_PX, uint32(0), uint32(0));
        assertEq(_settleOne(item), BAD_SIGNATURE);
    }

    function test_orderDigestMatchesOffchainEncoding() public view {
        Order memory o = Order(alice, 7, 2, true, true, 123e8, 5e8, 99, 1234, 250);
        bytes32 typeHash = keccak256(
            "Order(address owner,uint32 subaccount,uint32 market,bool isBuy,bool reduceOnly,uint64 price,uint64 size,uint64 nonce,uint64 expiry,uint32 maxFeePpm)"
        );
        bytes32 sh = keccak256(abi.encode(typeHash, o.owner, o.subaccount, o.market, o.isBuy, o.reduceOnly, o.price, o.size, o.nonce, o.expiry, o.maxFeePpm));
        bytes32 dom = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Crossbook"),
                keccak256("1"),
                block.chainid,
                address(ch)
            )
        );
        assertEq(ch.domainSeparator(), dom);
        assertEq(ch.orderDigest(o), keccak256(abi.encodePacked(hex"1901", dom, sh)));
    }

    // ------------------------------------------------------------------ order rules

    function test_expired() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        t.expiry = uint64(block.timestamp);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0 == 1 ? 0 : _expect(t, m, 0));
        vm.warp(block.timestamp + 1);
        t.nonce = 5;
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), EXPIRED);
        t.expiry = FAR;
        m.expiry = uint64(block.timestamp - 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), EXPIRED);
    }

    function _expect(Order memory, Order memory, uint8 r) internal pure returns (uint8) {
        return r;
    }

    function test_overfillAcrossTwoBatches() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 2e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 10e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 15e7, ETH_PX, 0, 0)), 0);
        assertEq(ch.filledAmount(alice, 1), 15e7);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 6e7, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0)), 0);
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(ch.filledAmount(bob, 1), 2e8); // the maker's 10e8 order is still partially filled
        // a second order with the same nonce cannot revive a spent nonce, whatever its size
        Order memory t2 = _order(alice, 0, 0, true, 2100e8, 10e8, 1);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
    }

    function test_sameNonceSharesBudgetUntilSpent() public {
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 10e8, 1);
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 2e8, 7);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0);
        // a bigger order on the same nonce (an amend) continues the budget: 1e8 filled of 3e8
        Order memory t2 = _order(alice, 0, 0, true, ETH_PX, 3e8, 7);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 25e7, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0);
        assertEq(ch.filledAmount(alice, 7), 2e8);
        // 2e8 reaches the first order's size: that fill spends the nonce
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0);
        assertEq(ch.filledAmount(alice, 7), SPENT);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        // neighbouring nonces in the same state word are untouched
        assertEq(ch.filledAmount(alice, 6), 0);
        assertEq(ch.filledAmount(alice, 8), 0);
    }

    function test_orderTableVerifiesOnceAndFillsRepeatedly() public {
        // one resting maker order filled by three taker orders in one batch: the table holds 4 entries
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 10e8, 1);
        bytes[] memory items = new bytes[](3);
        for (uint64 i = 0; i < 3; ++i) {
            Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 10 + i);
            items[i] = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        }
        bytes memory b = _batch(items);
        assertEq(b.length, 10 + 3 + 4 * 130 + 3 * 29);
        uint8[] memory r = _settle(items);
        assertEq(r[0] + r[1] + r[2], 0);
        assertEq(ch.filledAmount(bob, 1), 3e8);
        assertEq(_size(alice, 0, 0), 3e8);
        // a bad signature in the table is rejected at every fill that uses it, and only there
        Order memory t3 = _order(alice, 0, 0, true, ETH_PX, 1e8, 20);
        items[0] = _fillItem(t3, CAROL_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        items[1] = _fillItem(t3, CAROL_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        items[2] = _fillItem(t3, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        r = _settle(items);
        assertEq(r[0], BAD_SIGNATURE);
        assertEq(r[1], BAD_SIGNATURE);
        assertEq(r[2], 0);
        assertEq(ch.filledAmount(bob, 1), 4e8);
    }

    function test_orderTableMalformed() public {
        bytes memory entry = _signedOrder(_order(alice, 0, 0, true, ETH_PX, 1e8, 1), ALICE_PK);
        bytes memory fields = abi.encodePacked(uint64(1e8), ETH_PX, uint32(0), uint32(0));
        // index out of range: MalformedBatch at the item's kind byte
        bytes memory b = abi.encodePacked(uint64(1), uint16(1), uint8(0), uint16(1), entry);
        _expectMalformed(abi.encodePacked(b, uint8(6), uint16(0), uint16(1), fields), 143);
        // a FILL_REF body one byte short of the batch's end: MalformedBatch at its kind byte too
        _expectMalformed(abi.encodePacked(b, uint8(6), uint16(0), uint16(0), uint64(1e8), ETH_PX, uint32(0), uint16(0)), 143);
        // FILL_REF without a table
        _expectMalformed(abi.encodePacked(uint64(1), uint16(1), uint8(6), uint16(0), uint16(0), fields), 10);
        // truncated table (header or entries): offset 10
        _expectMalformed(abi.encodePacked(uint64(1), uint16(0), uint8(0), uint8(1)), 10);
        _expectMalformed(abi.encodePacked(uint64(1), uint16(0), uint8(0), uint16(2), entry), 10);
        // a table nothing references is fine; an empty table too
        vm.prank(operator);
        ch.settle(abi.encodePacked(uint64(1), uint16(0), uint8(0), uint16(1), entry));
        assertEq(ch.nextSeq(), 1);
        vm.prank(operator);
        ch.settle(abi.encodePacked(uint64(1), uint16(1), uint8(0), uint16(0), uint8(4), uint32(0), int32(1)));
        assertEq(ch.nextSeq(), 2);
    }

    function test_filledLanesAreIndependent() public {
        for (uint64 n = 4; n < 8; ++n) {
            Order memory t = _order(alice, 0, 0, true, ETH_PX, uint64(n) * 1e5, n);
            Order memory m = _order(bob, 0, 0, false, ETH_PX, uint64(n) * 1e5, n + 100);
            assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, uint64(n) * 1e5, ETH_PX, 0, 0)), 0);
        }
        for (uint64 n = 4; n < 8; ++n) {
            assertEq(ch.filledAmount(alice, n), SPENT);
        }
        assertEq(ch.filledAmount(alice, 8), 0);
        // partially filled nonces sharing a lane word keep their own amounts
        for (uint64 n = 8; n < 12; ++n) {
            Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, n);
            Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, n + 100);
            assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, uint64(n) * 1e5, ETH_PX, 0, 0)), 0);
        }
        for (uint64 n = 8; n < 12; ++n) {
            assertEq(ch.filledAmount(alice, n), uint256(n) * 1e5);
        }
    }

    /// The word of 128 nonces holds two partially filled amounts inline; a third partially filled nonce of the
    /// word uses its own lane until spent, and a spent nonce frees whichever lane it held (ClearinghouseStorage).
    function test_inlineAndOwnFilledLanes() public {
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 100e8, 1);
        Order memory t1 = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory t2 = _order(alice, 0, 0, true, ETH_PX, 1e8, 2);
        Order memory t3 = _order(alice, 0, 0, true, ETH_PX, 1e8, 3);
        Order memory t6 = _order(alice, 0, 0, true, ETH_PX, 1e8, 6);
        assertEq(_settleOne(_fillItem(t6, ALICE_PK, m, BOB_PK, 1e7, ETH_PX, 0, 0)), 0); // inline
        assertEq(_settleOne(_fillItem(t1, ALICE_PK, m, BOB_PK, 3e7, ETH_PX, 0, 0)), 0); // inline
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 2e7, ETH_PX, 0, 0)), 0); // own lane
        assertEq(ch.filledAmount(alice, 1), 3e7);
        assertEq(ch.filledAmount(alice, 2), 2e7);
        assertEq(ch.filledAmount(alice, 6), 1e7);
        assertEq(_settleOne(_fillItem(t6, ALICE_PK, m, BOB_PK, 9e7, ETH_PX, 0, 0)), 0); // spent: inline freed
        assertEq(ch.filledAmount(alice, 6), SPENT);
        Order memory t7 = _order(alice, 0, 0, true, ETH_PX, 1e8, 7);
        assertEq(_settleOne(_fillItem(t7, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0)), 0); // the freed inline lane
        assertEq(_settleOne(_fillItem(t7, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0)), 0); // spent: inline freed
        assertEq(ch.filledAmount(alice, 7), SPENT);
        assertEq(_settleOne(_fillItem(t1, ALICE_PK, m, BOB_PK, 7e7, ETH_PX, 0, 0)), 0); // spent: inline freed
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(_settleOne(_fillItem(t1, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t3, ALICE_PK, m, BOB_PK, 1e7, ETH_PX, 0, 0)), 0); // takes the free inline lane
        assertEq(ch.filledAmount(alice, 3), 1e7);
        assertEq(ch.filledAmount(alice, 2), 2e7);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 81e6, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 8e7, ETH_PX, 0, 0)), 0); // spent: own lane emptied
        assertEq(ch.filledAmount(alice, 2), SPENT);
        assertEq(_settleOne(_fillItem(t2, ALICE_PK, m, BOB_PK, 1e5, ETH_PX, 0, 0)), OVERFILL);
        assertEq(ch.filledAmount(alice, 3), 1e7);
        // one batch: nonce 4 partially filled before nonce 3 (inline) is spent, nonce 5 after it
        Order memory t4 = _order(alice, 0, 0, true, ETH_PX, 1e8, 4);
        Order memory t5 = _order(alice, 0, 0, true, ETH_PX, 1e8, 5);
        bytes[] memory items = new bytes[](4);
        items[0] = _fillItem(t4, ALICE_PK, m, BOB_PK, 4e7, ETH_PX, 0, 0);
        items[1] = _fillItem(t3, ALICE_PK, m, BOB_PK, 9e7, ETH_PX, 0, 0);
        items[2] = _fillItem(t5, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0);
        items[3] = _fillItem(t4, ALICE_PK, m, BOB_PK, 1e7, ETH_PX, 0, 0);
        uint8[] memory r = _settle(items);
        assertEq(r[0] + r[1] + r[2] + r[3], 0);
        assertEq(ch.filledAmount(alice, 3), SPENT);
        assertEq(ch.filledAmount(alice, 4), 5e7);
        assertEq(ch.filledAmount(alice, 5), 5e7);
        assertEq(_settleOne(_fillItem(t4, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0)), 0);
        assertEq(_settleOne(_fillItem(t5, ALICE_PK, m, BOB_PK, 51e6, ETH_PX, 0, 0)), OVERFILL);
        assertEq(_settleOne(_fillItem(t5, ALICE_PK, m, BOB_PK, 5e7, ETH_PX, 0, 0)), 0);
        for (uint64 n = 1; n < 8; ++n) {
            assertEq(ch.filledAmount(alice, n), SPENT);
        }
        // nonce 129 shares index 1 with nonce 1 but lives in the next word
        assertEq(ch.filledAmount(alice, 129), 0);
        Order memory t129 = _order(alice, 0, 0, true, ETH_PX, 1e8, 129);
        assertEq(_settleOne(_fillItem(t129, ALICE_PK, m, BOB_PK, 2e7, ETH_PX, 0, 0)), 0);
        assertEq(ch.filledAmount(alice, 129), 2e7);
        assertEq(ch.filledAmount(alice, 1), SPENT);
        assertEq(ch.filledAmount(alice, 8), 0);
        assertEq(ch.filledAmount(bob, 1), 72e7); // every fill above, partially filled in an inline lane
    }

    function test_priceLimit() public {
        // buyer limit 1999 < price 2000
        Order memory t = _order(alice, 0, 0, true, 1999e8, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, 1990e8, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), PRICE_LIMIT);
        // seller limit 2001 > price 2000
        t.price = 2100e8;
        m.price = 2001e8;
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), PRICE_LIMIT);
        // inside both limits
        m.price = 1990e8;
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), 0);
    }

    function test_feeTooHigh() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 1001, 0)), FEE_TOO_HIGH);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 1001)), FEE_TOO_HIGH);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 1000, 1000)), 0);
    }

    function test_reduceOnly() public {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 2e8, 1, 1)), 0); // alice +2
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 2);
        t.reduceOnly = true; // would increase
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 5e8, 2);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), REDUCE_ONLY);
        // sell 3 reduce-only from +2: flip
        t = _order(alice, 0, 0, false, ETH_PX, 3e8, 3);
        t.reduceOnly = true;
        m = _order(bob, 0, 0, true, ETH_PX, 5e8, 3);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 3e8, ETH_PX, 0, 0)), REDUCE_ONLY);
        // from zero position: reduce-only is rejected
        Order memory c = _order(carol, 0, 0, false, ETH_PX, 1e8, 1);
        c.reduceOnly = true;
        _depositQuote(carol, 0, 10_000e6);
        assertEq(_settleOne(_fillItem(c, CAROL_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), REDUCE_ONLY);
        // exact close is fine
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 2e8, ETH_PX, 0, 0)), 0);
        assertEq(_size(alice, 0, 0), 0);
    }

    function test_insufficientMargin() public {
        // carol: 1,000 USD; 1 ETH needs 100 USD initial; 11 ETH needs 1,100
        _depositQuote(carol, 0, 1000e6);
        Order memory t = _order(carol, 0, 0, true, ETH_PX, 11e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 11e8, 1);
        assertEq(_settleOne(_fillItem(t, CAROL_PK, m, BOB_PK, 11e8, ETH_PX, 0, 0)), INSUFFICIENT_MARGIN);
        assertEq(_settleOne(_fillItem(t, CAROL_PK, m, BOB_PK, 9e8, ETH_PX, 0, 0)), 0);
        Health memory h = ch.health(carol, 0);
        assertEq(h.initialRequirement, 900e6);
        assertEq(h.initialHealth, 100e6);
    }

    function test_riskReducingExceptionAndItsLimit() public {
        _depositQuote(carol, 0, 1000e6);
        assertEq(_settleOne(_fillItem(_order(carol, 0, 0, true, ETH_PX, 9e8, 1), CAROL_PK, _order(bob, 0, 0, false, ETH_PX, 9e8, 1), BOB_PK, 9e8, ETH_PX, 0, 0)), 0);
        // price drops to 1950: equity 550, initial req 877.5 -> initial health < 0
        fEth.setAnswer(1950e8);
        assertLt(ch.health(carol, 0).initialHealth, 0);
        // selling 1 at 1950 strictly reduces risk and improves initial health: accepted
        Order memory s = _order(carol, 0, 0, false, 1950e8, 1e8, 2);
        Order memory b = _order(bob, 0, 0, true, 1950e8, 1e8, 2);
        assertEq(_settleOne(_fillItem(s, CAROL_PK, b, BOB_PK, 1e8, 1950e8, 0, 0)), 0);
        // selling 1 at a terrible price (1000) reduces size but worsens health: rejected
        s = _order(carol, 0, 0, false, 1000e8, 1e8, 3);
        b = _order(bob, 0, 0, true, 1000e8, 1e8, 3);
        assertEq(_settleOne(_fillItem(s, CAROL_PK, b, BOB_PK, 1e8, 1000e8, 0, 0)), INSUFFICIENT_MARGIN);
        // increasing is rejected
        s = _order(carol, 0, 0, true, 1950e8, 1e8, 4);
        b = _order(bob, 0, 0, false, 1950e8, 1e8, 4);
        assertEq(_settleOne(_fillItem(s, CAROL_PK, b, BOB_PK, 1e8, 1950e8, 0, 0)), INSUFFICIENT_MARGIN);
    }

    function test_openInterestCap() public {
        ch.setMarketConfig(0, _cfg(1, 1e6, 1e5, 3e8));
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 3e8, 1, 1)), 0);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e5, 2, 2)), OPEN_INTEREST_CAP);
        // reducing OI is always allowed, even above a lowered cap
        ch.setMarketConfig(0, _cfg(1, 1e6, 1e5, 1e8));
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 1e8, 3, 3)), 0);
        assertEq(ch.openInterest(0), 2e8);
    }

    function test_invalidItems() public {
        Order memory t = _order(alice, 0, 0, true, ETH_PX, 1e8, 1);
        Order memory m = _order(bob, 0, 0, false, ETH_PX, 1e8, 1);
        // same side
        Order memory m2 = _order(bob, 0, 0, true, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m2, BOB_PK, 1e8, ETH_PX, 0, 0)), INVALID_ITEM);
        // different markets
        m2 = _order(bob, 0, 1, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m2, BOB_PK, 1e8, ETH_PX, 0, 0)), INVALID_ITEM);
        // same sub-account
        m2 = _order(alice, 0, 0, false, ETH_PX, 1e8, 2);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m2, ALICE_PK, 1e8, ETH_PX, 0, 0)), INVALID_ITEM);
        // same owner and nonce on both sides
        m2 = _order(alice, 1, 0, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m2, ALICE_PK, 1e8, ETH_PX, 0, 0)), INVALID_ITEM);
        // zero size, off-lot, off-tick, zero price
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 0, ETH_PX, 0, 0)), INVALID_ITEM);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8 + 1, ETH_PX, 0, 0)), INVALID_ITEM);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX + 1, 0, 0)), INVALID_ITEM);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, BOB_PK, 1e8, 0, 0, 0)), INVALID_ITEM);
        // unknown market
        Order memory tu = _order(alice, 0, 7, true, ETH_PX, 1e8, 1);
        Order memory mu = _order(bob, 0, 7, false, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(tu, ALICE_PK, mu, BOB_PK, 1e8, ETH_PX, 0, 0)), INVALID_ITEM);
        // unknown flag bits
        bytes memory item = _fillItem(t, ALICE_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0);
        item[1 + 28] = bytes1(uint8(5));
        assertEq(_settleOne(item), INVALID_ITEM);
        // withdrawal of an unknown asset / zero amount; transfer to the same sub-account; funding unknown market
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 9, 1, 1, FAR)), INVALID_ITEM);
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 0, 1, FAR)), INVALID_ITEM);
        assertEq(_settleOne(_transferItem(ALICE_PK, 0, 0, 0, 1, 1)), INVALID_ITEM);
        assertEq(_settleOne(_fundingItem(9, 1)), INVALID_ITEM);
        assertEq(_size(alice, 0, 0), 0);
    }

    function test_oracleUnavailable() public {
        // stale
        fEth.setAnswerAt(int256(uint256(ETH_PX)), block.timestamp - 3601);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), ORACLE_UNAVAILABLE);
        assertEq(_settleOne(_fundingItem(0, 5)), ORACLE_UNAVAILABLE);
        // non-positive
        fEth.setAnswer(0);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), ORACLE_UNAVAILABLE);
        fEth.setAnswer(-5);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), ORACLE_UNAVAILABLE);
        // out of band
        oracle.setFeed(1, address(fEth), 3600, 1000e8, 3000e8);
        fEth.setAnswer(3001e8);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), ORACLE_UNAVAILABLE);
        fEth.setAnswer(int256(uint256(ETH_PX)));
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), 0);
        // a price of another held market going bad blocks trading in any market
        assertEq(_settleOne(_simpleFill(1, true, BTC_PX, 1e4, 2, 2)), 0);
        fBtc.setAnswer(0);
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 3, 3)), ORACLE_UNAVAILABLE);
    }

    // ------------------------------------------------------------------ reduce-only mode (§9.8)

    /// @dev Alice long 2 ETH, Bob short 2 ETH, then the ETH oracle goes stale.
    function _openThenFreeze() private {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 2e8, 1, 1)), 0);
        fEth.setAnswerAt(int256(uint256(ETH_PX)), block.timestamp - 3601);
    }

    function test_reduceOnlyMode_bothReduce_accepted() public {
        _openThenFreeze();
        int256 qa = ch.quoteBalance(alice, 0);
        // Alice sells 1 (reduces her long), Bob buys 1 (reduces his short): applied without a price
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 1e8, 2, 2)), 0);
        assertEq(_size(alice, 0, 0), 1e8);
        assertEq(_size(bob, 0, 0), -1e8);
        assertTrue(ch.quoteBalance(alice, 0) > qa); // proceeds minus the taker fee
        // closing to exactly zero is a reduction too
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 1e8, 3, 3)), 0);
        assertEq(_size(alice, 0, 0), 0);
        assertEq(_size(bob, 0, 0), 0);
        assertEq(ch.openInterest(0), 0);
    }

    function test_reduceOnlyMode_increaseOrFlip_rejected() public {
        _openThenFreeze();
        // both increase
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 2, 2)), ORACLE_UNAVAILABLE);
        // Alice flips (sells 3 of her long 2) while Bob reduces: rejected
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 3e8, 3, 3)), ORACLE_UNAVAILABLE);
        // one side opens a fresh position: rejected even though the other reduces
        _depositQuote(carol, 0, 100_000e6);
        Order memory t = _order(alice, 0, 0, false, ETH_PX, 1e8, 4);
        Order memory m = _order(carol, 0, 0, true, ETH_PX, 1e8, 1);
        assertEq(_settleOne(_fillItem(t, ALICE_PK, m, CAROL_PK, 1e8, ETH_PX, 0, 0)), ORACLE_UNAVAILABLE);
        assertEq(_size(alice, 0, 0), 2e8);
        assertEq(_size(bob, 0, 0), -2e8);
        // nothing is liquidated at the stale price either
        vm.expectRevert(abi.encodeWithSignature("OracleUnavailable(uint16)", uint16(1)));
        ch.health(alice, 0);
    }

    function test_reduceOnlyMode_checkOrder() public {
        _openThenFreeze();
        // earlier checks still apply first: a bad signature on a reducing fill is BAD_SIGNATURE
        Order memory t = _order(alice, 0, 0, false, ETH_PX, 1e8, 2);
        Order memory m = _order(bob, 0, 0, true, ETH_PX, 1e8, 2);
        assertEq(_settleOne(_fillItem(t, BOB_PK, m, BOB_PK, 1e8, ETH_PX, 0, 0)), BAD_SIGNATURE);
        // a fresh price restores the normal path (margin checked again)
        fEth.setAnswer(int256(uint256(ETH_PX)));
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 3, 3)), 0);
        assertEq(_size(alice, 0, 0), 3e8);
    }

    // ------------------------------------------------------------------ withdrawals and transfers

    function test_withdrawal() public {
        uint256 before = usdc.balanceOf(alice);
        bytes memory w = _withdrawItem(ALICE_PK, 0, 0, 1000e6, 1, FAR);
        vm.expectEmit();
        emit Withdrawn(alice, 0, 0, 1000e6, ch.nextSeq());
        assertEq(_settleOne(w), 0);
        assertEq(usdc.balanceOf(alice) - before, 1000e6);
        assertEq(ch.quoteBalance(alice, 0), 99_000e6);
        // replay
        assertEq(_settleOne(w), REPLAYED);
        // larger than the balance
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 99_000e6 + 1, 2, FAR)), INSUFFICIENT_BALANCE);
        // signed by an approved agent: owner only
        vm.prank(alice);
        ch.setAgent(agent, true);
        bytes32 d = ch.withdrawalDigest(alice, 0, 0, 1e6, 3, FAR);
        bytes memory byAgent = abi.encodePacked(uint8(2), alice, uint32(0), uint16(0), uint128(1e6), uint64(3), FAR, _sig(AGENT_PK, d));
        assertEq(_settleOne(byAgent), BAD_SIGNATURE);
        // expired
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 1e6, 4, uint64(block.timestamp - 1))), EXPIRED);
    }

    function test_withdrawalNeedsMarginAndNeverBorrowsQuote() public {
        assertEq(_settleOne(_simpleFill(0, false, ETH_PX, 40e8, 1, 1)), 0); // alice short 40 ETH (80k notional)
        // quote 179,960, equity 99,960, initial requirement 4,000 -> withdrawing 97,000 leaves < 4,000
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 97_000e6, 2, FAR)), INSUFFICIENT_MARGIN);
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 10_000e6, 3, FAR)), 0);
        // collateral withdrawal
        _depositWeth(carol, 0, 2e18);
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 0, 1, 1e18, 1, FAR)), 0);
        assertEq(weth.balanceOf(carol), 1e18);
        assertEq(ch.collateralBalance(carol, 0, 1), 1e18);
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 0, 1, 1e18 + 1, 2, FAR)), INSUFFICIENT_BALANCE);
        // negative quote: nothing withdrawable in quote
        ch.harnessSetPortfolio(carol, 1, -5, new uint16[](0), new uint256[](0), new uint32[](0), new int256[](0), new int256[](0), new int256[](0));
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 1, 0, 1, 3, FAR)), INSUFFICIENT_BALANCE);
    }

    function test_withdrawEmptiesDeadOracleAsset() public {
        _depositWeth(carol, 0, 1e18);
        fEth.setAnswer(0);
        // the asset is fully withdrawn so its price is not needed afterwards
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 0, 1, 5e17, 1, FAR)), ORACLE_UNAVAILABLE);
        assertEq(_settleOne(_withdrawItem(CAROL_PK, 0, 1, 1e18, 2, FAR)), 0);
    }

    function test_transferBetweenOwnSubaccounts() public {
        assertEq(_settleOne(_transferItem(ALICE_PK, 0, 3, 0, 5_000e6, 1)), 0);
        assertEq(ch.quoteBalance(alice, 0), 95_000e6);
        assertEq(ch.quoteBalance(alice, 3), 5_000e6);
        bytes memory tr = _transferItem(ALICE_PK, 0, 3, 0, 1e6, 2);
        assertEq(_settleOne(tr), 0);
        assertEq(_settleOne(tr), REPLAYED);
        _depositWeth(alice, 1, 3e18);
        assertEq(_settleOne(_transferItem(ALICE_PK, 1, 2, 1, 1e18, 3)), 0);
        assertEq(ch.collateralBalance(alice, 1, 1), 2e18);
        assertEq(ch.collateralBalance(alice, 2, 1), 1e18);
        assertEq(ch.health(alice, 2).equity, 1800e6); // 1 ETH * 2000 * 0.9
        assertEq(_settleOne(_transferItem(ALICE_PK, 1, 2, 1, 3e18, 4)), INSUFFICIENT_BALANCE);
        // a transfer signed by someone else
        bytes32 d = ch.transferDigest(alice, 0, 1, 0, 1e6, 5, FAR);
        bytes memory forged = abi.encodePacked(uint8(3), alice, uint32(0), uint32(1), uint16(0), uint128(1e6), uint64(5), FAR, _sig(BOB_PK, d));
        assertEq(_settleOne(forged), BAD_SIGNATURE);
    }

    // ------------------------------------------------------------------ sequencing and access

    function test_outOfOrderAndDuplicateBatchesRevert() public {
        bytes memory b = _batch(_one(_fundingItem(0, 1)));
        vm.prank(operator);
        ch.settle(b);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(BatchOutOfOrder.selector, uint64(2), uint64(1)));
        ch.settle(b);
        bytes memory ahead = abi.encodePacked(uint64(5), uint16(0));
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(BatchOutOfOrder.selector, uint64(2), uint64(5)));
        ch.settle(ahead);
    }

    function test_emptyBatchIsAccepted() public {
        vm.prank(operator);
        ch.settle(abi.encodePacked(uint64(1), uint16(0)));
        assertEq(ch.nextSeq(), 1);
    }

    function test_nonOperatorReverts() public {
        bytes memory b = _batch(_one(_fundingItem(0, 1)));
        bytes32 role = ch.OPERATOR_ROLE();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, role));
        ch.settle(b);
    }

    function test_moduleCannotBeCalledDirectly() public {
        (bool ok, bytes memory ret) = ch.settlementModule().call(abi.encodeWithSignature("settle(bytes)", abi.encodePacked(uint64(1), uint16(0))));
        assertFalse(ok);
        assertEq(bytes4(ret), DirectCallForbidden.selector);
    }

    function test_malformedBatches() public {
        _expectMalformed(hex"0000000000000001", 0); // short header
        _expectMalformed(abi.encodePacked(uint64(1), uint16(1)), 10); // missing item
        _expectMalformed(abi.encodePacked(uint64(1), uint16(1), uint8(9), uint64(0)), 10); // unknown kind
        _expectMalformed(abi.encodePacked(uint64(1), uint16(1), uint8(4), uint32(0)), 10); // truncated item
        _expectMalformed(abi.encodePacked(uint64(1), uint16(1), uint8(4), uint32(0), int32(1), uint8(0)), 19); // trailing
        _expectMalformed(abi.encodePacked(uint64(1), uint16(2), uint8(4), uint32(0), int32(1), uint8(0)), 19); // bad 2nd
    }

    function _expectMalformed(bytes memory b, uint256 offset) internal {
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MalformedBatch.selector, offset));
        ch.settle(b);
    }

    // ------------------------------------------------------------------ funding

    function test_fundingIndexClampAndLazySettlement() public {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 2e8, 1, 1)), 0); // alice +2, bob -2
        int256 qa = ch.quoteBalance(alice, 0);
        int256 qb = ch.quoteBalance(bob, 0);
        // rate 300 ppm at 2000: F += 300 * 2000e8 / 1e6 = 60_000_000 (0.6 USD per ETH)
        assertEq(_settleOne(_fundingItem(0, 300)), 0);
        assertEq(ch.cumulativeFunding(0), 6e7);
        // clamp to maxFunding 1000 ppm: F += 2e8
        assertEq(_settleOne(_fundingItem(0, 5000)), 0);
        assertEq(ch.cumulativeFunding(0), 26e7);
        assertEq(_settleOne(_fundingItem(0, -5000)), 0);
        assertEq(ch.cumulativeFunding(0), 6e7);
        // accrued, not settled: health shows it, the quote balance doesn't
        assertEq(ch.quoteBalance(alice, 0), qa);
        Health memory h = ch.health(alice, 0);
        // E = quote + PV - A = qa + 4000e6 - ceil(2e8 * 6e7 / 1e10) = qa + 4000e6 - 1.2e6
        assertEq(h.equity, qa + 4000e6 - 1_200_000);
        // next fill settles funding into quote for both sides (zero-sum through the funding balance)
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e5, 2, 2)), 0);
        uint256 cash = 1e5 * uint256(ETH_PX) / 1e10;
        uint256 fa = cash * 500 / PPM;
        uint256 fb = cash * 100 / PPM;
        assertEq(ch.quoteBalance(alice, 0), qa - 1_200_000 - int256(cash) - int256(fa));
        assertEq(ch.quoteBalance(bob, 0), qb + 1_200_000 + int256(cash) - int256(fb));
        assertEq(ch.fundingBalance(0), 0);
        (,, int256 snap) = ch.position(alice, 0, 0);
        assertEq(snap, 6e7);
    }

    function test_fundingRoundsAgainstBothSides() public {
        assertEq(_settleOne(_simpleFill(2, true, SOL_PX, 3e6, 1, 1)), 0); // alice +0.03 SOL
        // F moves by 7 units: owed ceil(3e6*7/1e10) = 1 by alice, receivable ceil(-3e6*7/1e10) = 0 for bob
        ch.harnessSetCumulativeFunding(2, 7);
        assertEq(_settleOne(_simpleFill(2, true, SOL_PX, 1e6, 2, 2)), 0);
        assertEq(ch.fundingBalance(2), 1);
    }

    // ------------------------------------------------------------------ deposits, insurance, fees

    function test_feesAndInsurance() public {
        assertEq(_settleOne(_simpleFill(0, true, ETH_PX, 1e8, 1, 1)), 0);
        assertEq(ch.feePool(), 1_200_000);
        vm.expectRevert(abi.encodeWithSelector(InsufficientFees.selector, uint256(1_200_000)));
        ch.withdrawFees(carol, 1_200_001);
        ch.withdrawFees(carol, 1_000_000);
        assertEq(usdc.balanceOf(carol), 1_000_000);
        assertEq(ch.feePool(), 200_000);
        vm.prank(alice);
        vm.expectRevert();
        ch.withdrawFees(alice, 1);
        usdc.mint(carol, 5e6);
        vm.startPrank(carol);
        usdc.approve(address(ch), 5e6);
        ch.depositInsurance(5e6);
        vm.stopPrank();
        assertEq(ch.insuranceFund(), 5e6);
        assertEq(usdc.balanceOf(address(ch)), uint256(ch.quoteBalance(alice, 0) + ch.quoteBalance(bob, 0)) + ch.feePool() + ch.insuranceFund());
    }
}
