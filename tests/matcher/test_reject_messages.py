"""Every refusal carries a machine-readable code and a human message (issue #3's ack contract);
the book's own refusals used to repeat the code's name as their message."""
from __future__ import annotations

from engine_helpers import ETH_PX, LOT, TICK, A, B, funded, place
from matcher.commands import Code
from matcher.orders import Tif


def test_a_book_refusal_has_a_human_message() -> None:
    eng = funded()
    assert place(eng, A, False, ETH_PX, LOT, 1).ack.ok  # an ask at the oracle price
    res = place(eng, B, True, ETH_PX + TICK, LOT, 1, tif=Tif.POST_ONLY)  # would take it
    assert not res.ack.ok and res.ack.code == Code.POST_ONLY_WOULD_CROSS
    assert res.ack.message == "post-only order would trade against the book"
