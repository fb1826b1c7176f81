"""Turn revert data into the contract's custom error name and arguments."""
from __future__ import annotations

from typing import Any, Iterable

from eth_abi import decode as abi_decode
from eth_utils import keccak


class ContractRevert(Exception):
    """A call or transaction reverted; `name` is the custom error (or 'Error'/'Panic')."""

    def __init__(self, name: str, args: tuple[Any, ...], data: bytes) -> None:
        super().__init__(f"{name}{args}")
        self.name = name
        self.args_ = args
        self.data = data


def _signature(item: dict[str, Any]) -> str:
    def typ(inp: dict[str, Any]) -> str:
        t = inp["type"]
        if t.startswith("tuple"):
            return "(" + ",".join(typ(c) for c in inp["components"]) + ")" + t[5:]
        return str(t)

    return f"{item['name']}(" + ",".join(typ(i) for i in item.get("inputs", [])) + ")"


class ErrorDecoder:
    """Knows the custom errors of a set of ABIs and decodes revert payloads."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str]]] = {
            keccak(text="Error(string)")[:4]: ("Error", ["string"]),
            keccak(text="Panic(uint256)")[:4]: ("Panic", ["uint256"]),
        }
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    sig = _signature(item)
                    types = sig[sig.index("(") + 1 : -1]
                    self._by_selector[keccak(text=sig)[:4]] = (
                        item["name"],
                        _split_types(types),
                    )

    def decode(self, data: bytes) -> ContractRevert:
        """Decode revert data; unknown selectors keep their raw hex as the name."""
        sel, body = data[:4], data[4:]
        if sel not in self._by_selector:
            return ContractRevert("0x" + data.hex() if data else "EmptyRevert", (), data)
        name, types = self._by_selector[sel]
        try:
            args = tuple(abi_decode(types, body)) if types else ()
        except Exception:  # noqa: BLE001 - malformed payload: keep the name, drop the args
            args = ()
        return ContractRevert(name, args, data)


def _split_types(types: str) -> list[str]:
    """Split a comma list of ABI types at depth 0 (tuples contain commas)."""
    out: list[str] = []
    depth, cur = 0, ""
    for ch in types:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return out
