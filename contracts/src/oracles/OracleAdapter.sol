// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {AggregatorV3Interface} from "../interfaces/AggregatorV3Interface.sol";
import {IOracleAdapter} from "../interfaces/IOracleAdapter.sol";

/// @title OracleAdapter
/// @notice Maps feed ids to Chainlink AggregatorV3-compatible feeds and validates their answers
///         (docs/protocol.md §6): answer > 0, updatedAt + heartbeat >= block.timestamp, and the answer
///         scaled (truncating) to 1e8 within [minPrice, maxPrice].
contract OracleAdapter is Ownable, IOracleAdapter {
    struct Feed {
        address aggregator;
        uint8 decimals;
        uint32 heartbeat;
        uint64 minPrice;
        uint64 maxPrice;
    }

    error InvalidFeedConfig();

    event FeedSet(uint16 indexed feedId, address aggregator, uint32 heartbeat, uint64 minPrice, uint64 maxPrice);

    mapping(uint16 => Feed) internal _feeds;

    uint8 internal constant ERR_NONE = 0;
    uint8 internal constant ERR_UNKNOWN = 1;
    uint8 internal constant ERR_NONPOSITIVE = 2;
    uint8 internal constant ERR_STALE = 3;
    uint8 internal constant ERR_BAND = 4;

    /// @param owner_ The account allowed to configure feeds.
    constructor(address owner_) Ownable(owner_) {}

    /// @notice Configures (or replaces) a feed. Reads and caches the aggregator's decimals.
    /// @param feedId Feed id used by the clearinghouse's markets and collateral assets.
    /// @param aggregator AggregatorV3-compatible contract.
    /// @param heartbeat Maximum age in seconds of the latest answer.
    /// @param minPrice Lowest accepted price (1e8 scale), must be > 0.
    /// @param maxPrice Highest accepted price (1e8 scale), must be >= minPrice.
    function setFeed(uint16 feedId, address aggregator, uint32 heartbeat, uint64 minPrice, uint64 maxPrice)
        external
        onlyOwner
    {
        if (aggregator == address(0) || minPrice == 0 || maxPrice < minPrice) revert InvalidFeedConfig();
        uint8 dec = AggregatorV3Interface(aggregator).decimals();
        if (dec > 36) revert InvalidFeedConfig();
        _feeds[feedId] = Feed(aggregator, dec, heartbeat, minPrice, maxPrice);
        emit FeedSet(feedId, aggregator, heartbeat, minPrice, maxPrice);
    }

    /// @notice Returns the configuration of a feed (aggregator is zero when unknown).
    function feed(uint16 feedId) external view returns (Feed memory) {
        return _feeds[feedId];
    }

    /// @inheritdoc IOracleAdapter
    function price(uint16 feedId) external view returns (uint256) {
        (uint8 err, uint256 p, int256 answer, uint256 updatedAt) = _read(feedId);
        if (err == ERR_UNKNOWN) revert OracleUnknownFeed(feedId);
        if (err == ERR_NONPOSITIVE) revert OracleNonPositive(feedId, answer);
        if (err == ERR_STALE) revert OracleStale(feedId, updatedAt);
        if (err == ERR_BAND) revert OracleOutOfBand(feedId, p);
        return p;
    }

    /// @inheritdoc IOracleAdapter
    function tryPrice(uint16 feedId) external view returns (bool ok, uint256 p) {
        uint8 err;
        (err, p,,) = _read(feedId);
        if (err != ERR_NONE) return (false, 0);
        return (true, p);
    }

    function _read(uint16 feedId) internal view returns (uint8 err, uint256 p, int256 answer, uint256 updatedAt) {
        Feed memory f = _feeds[feedId];
        if (f.aggregator == address(0)) return (ERR_UNKNOWN, 0, 0, 0);
        try AggregatorV3Interface(f.aggregator).latestRoundData() returns (
            uint80, int256 a, uint256, uint256 u, uint80
        ) {
            answer = a;
            updatedAt = u;
        } catch {
            // An aggregator that reverts is as useless as an unknown one.
            return (ERR_UNKNOWN, 0, 0, 0);
        }
        if (answer <= 0) return (ERR_NONPOSITIVE, 0, answer, updatedAt);
        if (updatedAt + f.heartbeat < block.timestamp) return (ERR_STALE, 0, answer, updatedAt);
        uint256 raw = uint256(answer);
        if (f.decimals > 8) p = raw / (10 ** (f.decimals - 8));
        else if (f.decimals < 8) p = raw * (10 ** (8 - f.decimals));
        else p = raw;
        if (p < f.minPrice || p > f.maxPrice) return (ERR_BAND, p, answer, updatedAt);
        return (ERR_NONE, p, answer, updatedAt);
    }
}
