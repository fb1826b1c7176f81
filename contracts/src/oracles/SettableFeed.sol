// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AggregatorV3Interface} from "../interfaces/AggregatorV3Interface.sol";

/// @title SettableFeed
/// @notice A Chainlink AggregatorV3-compatible feed whose answer anyone can set.
/// @dev FOR LOCAL CHAINS AND TESTS ONLY: the setters are open on purpose (the local price feeder and the
///      tests move prices with them). Never point a production OracleAdapter at this contract.
contract SettableFeed is AggregatorV3Interface {
    struct Round {
        int256 answer;
        uint256 startedAt;
        uint256 updatedAt;
    }

    error UnknownRound(uint80 roundId);

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);

    uint8 public immutable override decimals;
    string public override description;
    uint80 public latestRound;
    mapping(uint80 => Round) internal _rounds;

    /// @param decimals_ Decimals of the answers.
    /// @param description_ Human-readable pair name, e.g. "ETH / USD".
    constructor(uint8 decimals_, string memory description_) {
        decimals = decimals_;
        description = description_;
    }

    /// @notice Publishes a new round with updatedAt = block.timestamp. Open to anyone (local use only).
    function setAnswer(int256 answer) external {
        _push(answer, block.timestamp);
    }

    /// @notice Publishes a new round with an explicit updatedAt (for staleness tests). Open to anyone.
    function setAnswerAt(int256 answer, uint256 updatedAt) external {
        _push(answer, updatedAt);
    }

    /// @notice Always 1.
    function version() external pure override returns (uint256) {
        return 1;
    }

    /// @notice Data of a past round; reverts for a round that was never published.
    function getRoundData(uint80 roundId)
        external
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        if (roundId == 0 || roundId > latestRound) revert UnknownRound(roundId);
        Round memory r = _rounds[roundId];
        return (roundId, r.answer, r.startedAt, r.updatedAt, roundId);
    }

    /// @notice Latest round (all zeros before the first answer).
    function latestRoundData() external view override returns (uint80, int256, uint256, uint256, uint80) {
        uint80 id = latestRound;
        Round memory r = _rounds[id];
        return (id, r.answer, r.startedAt, r.updatedAt, id);
    }

    function _push(int256 answer, uint256 updatedAt) internal {
        uint80 id = latestRound + 1;
        latestRound = id;
        _rounds[id] = Round(answer, updatedAt, updatedAt);
        emit AnswerUpdated(answer, id, updatedAt);
    }
}
