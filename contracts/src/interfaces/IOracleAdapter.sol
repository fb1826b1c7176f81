// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Price source of the clearinghouse: Chainlink-compatible feeds scaled to 1e8 (docs/protocol.md §6).
interface IOracleAdapter {
    error OracleStale(uint16 feedId, uint256 updatedAt);
    error OracleNonPositive(uint16 feedId, int256 answer);
    error OracleOutOfBand(uint16 feedId, uint256 price);
    error OracleUnknownFeed(uint16 feedId);

    /// @notice The feed's price scaled to 1e8; reverts if unknown, stale, non-positive or out of band.
    function price(uint16 feedId) external view returns (uint256);

    /// @notice Like price() but never reverts: ok is false whenever price() would revert.
    function tryPrice(uint16 feedId) external view returns (bool ok, uint256 price);
}
