"""Cost of LLM calls from their token counts and the price table in conf/prices.yaml (`prices` in params).

A model without a price gets a null cost and a warning naming it, never 0: a silent 0 would make an unpriced
model look free next to a priced one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRICES_FILE = "conf/prices.yaml"


class PriceError(ValueError):
    """A price table entry that cannot be used; the message names the entry and the file."""


@dataclass(frozen=True)
class Price:
    """USD per 1M input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


def price_for(prices: Mapping[str, Any], model: str) -> Price | None:
    """The price of `model` in the `prices` params block, or None when the table has no line for it."""
    table = prices.get("usd_per_1m_tokens") or {}
    entry = table.get(model)
    if entry is None:
        return None
    where = f"{PRICES_FILE}: prices.usd_per_1m_tokens.{model}"
    if not isinstance(entry, Mapping) or set(entry) != {"input", "output"}:
        raise PriceError(f"{where}: expected {{input: <USD per 1M>, output: <USD per 1M>}}, got {entry!r}")
    try:
        price = Price(float(entry["input"]), float(entry["output"]))
    except (TypeError, ValueError):
        raise PriceError(f"{where}: prices must be numbers, got {entry!r}") from None
    if price.input < 0 or price.output < 0:
        raise PriceError(f"{where}: prices must be >= 0, got {entry!r}")
    return price


def unpriced_warning(stage: str, model: str) -> str:
    return (
        f"{stage}: warning: no price for model {model!r} in {PRICES_FILE} (prices.usd_per_1m_tokens): "
        "cost is reported as null; add the model's line to count it"
    )


def cost_metrics(tokens: Mapping[str, int], price: Price | None) -> dict[str, float | None]:
    """`cost: {usd, usd_cached}` for the `tokens` block of a stage's metrics (`prompt`, `completion` and the part
    of each answered from the LLM cache): what every answer would cost, and the part the cache paid for."""
    if price is None:
        return {"usd": None, "usd_cached": None}
    total = price.usd(tokens.get("prompt", 0), tokens.get("completion", 0))
    cached = price.usd(tokens.get("prompt_cached", 0), tokens.get("completion_cached", 0))
    return {"usd": round(total, 6), "usd_cached": round(cached, 6)}
