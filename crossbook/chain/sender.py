"""Send transactions from a local key: nonce tracking, gas estimation, revert decoding.

Used by the deploy script, the CLI and tests; the relayer has its own async sender with fee
bumping. Works against any JSON-RPC node because it signs locally (no unlocked accounts).
"""
from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from crossbook.chain.artifacts import Artifact
from crossbook.chain.errors import ContractRevert, ErrorDecoder


class TxFailed(Exception):
    """A mined transaction ended with status 0."""

    def __init__(self, receipt: TxReceipt) -> None:
        super().__init__(f"transaction 0x{bytes(receipt['transactionHash']).hex()} reverted")
        self.receipt = receipt


class TxSender:
    """Signs and sends transactions for one account, keeping the nonce locally."""

    def __init__(self, w3: Web3, key: str | bytes, decoder: ErrorDecoder | None = None) -> None:
        self.w3 = w3
        self.account: LocalAccount = Account.from_key(key)
        self.address = self.account.address
        self.decoder = decoder or ErrorDecoder([])
        self._nonce: int | None = None
        self.chain_id = w3.eth.chain_id

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        n = self._nonce
        self._nonce += 1
        return n

    def _fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
        tip = 1_000_000
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _decode(self, err: ContractLogicError) -> ContractRevert:
        data = err.data
        if isinstance(data, str) and data.startswith("0x"):
            return self.decoder.decode(bytes.fromhex(data[2:]))
        return ContractRevert(str(err), (), b"")

    def submit(self, tx: dict[str, Any]) -> bytes:
        """Fill in chain id, nonce, fees and gas; sign; send. Returns the transaction hash.

        Reverts found while estimating gas raise `ContractRevert` with the decoded custom error.
        """
        tx = {"from": self.address, "chainId": self.chain_id, **self._fees(), **tx}
        if "gas" not in tx:
            try:
                tx["gas"] = int(self.w3.eth.estimate_gas(tx) * 12 // 10) + 20_000  # type: ignore[arg-type]
            except ContractLogicError as err:
                raise self._decode(err) from None
        tx["nonce"] = self._next_nonce()
        signed = self.account.sign_transaction(tx)
        try:
            return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except Exception:
            self._nonce = None  # resync from the node: the nonce was not consumed
            raise

    def wait(self, tx_hash: bytes) -> TxReceipt:
        """Wait for a receipt; a mined revert raises `TxFailed`."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.01)  # type: ignore[arg-type]
        if receipt["status"] != 1:
            raise TxFailed(receipt)
        return receipt

    def send_raw(self, tx: dict[str, Any]) -> TxReceipt:
        """`submit` then `wait`."""
        return self.wait(self.submit(tx))

    def transact(self, fn: ContractFunction, value: int = 0, gas: int | None = None) -> TxReceipt:
        """Call a contract function in a transaction and wait for it to be mined."""
        tx: dict[str, Any] = {"to": fn.address, "data": fn._encode_transaction_data(), "value": value}
        if gas is not None:
            tx["gas"] = gas
        return self.send_raw(tx)

    def call(self, fn: ContractFunction) -> Any:
        """eth_call a view, decoding custom-error reverts."""
        try:
            return fn.call({"from": self.address})
        except ContractLogicError as err:
            raise self._decode(err) from None

    def deploy(self, artifact: Artifact, *args: Any) -> Contract:
        """Deploy a compiled contract and return a bound web3 contract object."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self.send_raw({"data": data})
        address = receipt["contractAddress"]
        assert address is not None
        return self.w3.eth.contract(address=address, abi=artifact.abi)
