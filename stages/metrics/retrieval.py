"""Retrieval metrics: did the retriever return a relevant passage, and how high did it rank it."""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any


def first_relevant_rank(retrieved: Sequence[str], relevant: Collection[str]) -> int | None:
    """The 1-based rank of the first retrieved id that is relevant, or None when none is."""
    return next((rank for rank, item in enumerate(retrieved, start=1) if item in relevant), None)


def reciprocal_rank(retrieved: Sequence[str], relevant: Collection[str]) -> float:
    """1/rank of the first relevant id (0.0 when none is retrieved)."""
    rank = first_relevant_rank(retrieved, relevant)
    return 1.0 / rank if rank else 0.0


def hit_rate(ranks: Iterable[int | None], k: int | None = None) -> float:
    """The share of queries with a relevant passage in the top `k` (any rank when k is None)."""
    ranks = list(ranks)
    if not ranks:
        return 0.0
    return sum(1 for rank in ranks if rank is not None and (k is None or rank <= k)) / len(ranks)


def mean_reciprocal_rank(ranks: Iterable[int | None]) -> float:
    """MRR over queries, from each query's first relevant rank (None counts as 0)."""
    ranks = list(ranks)
    return statistics.fmean(1.0 / rank if rank else 0.0 for rank in ranks) if ranks else 0.0


def quote_in(quote: str, passage: str) -> bool:
    """Whether `passage` holds `quote`, ignoring case and runs of whitespace (PDF text wraps lines anywhere)."""
    squeeze = " ".join
    return squeeze(quote.lower().split()) in squeeze(passage.lower().split())


def gold_ids(chunks: Iterable[Mapping[str, Any]], doc: str, quote: str) -> set[str]:
    """Ids of the chunks (`id`, `doc`, `text`) from document `doc` that hold the gold `quote`: the relevant ones.

    Judging relevance by a quote, not by chunk ids, keeps gold labels valid when the chunking changes.
    """
    return {chunk["id"] for chunk in chunks if chunk["doc"] == doc and quote_in(quote, chunk["text"])}
