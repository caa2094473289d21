"""Answer similarity: cosine similarity of sentence embeddings (all-MiniLM-L6-v2), per row and in batches."""

from __future__ import annotations

from collections.abc import Sequence

from stages.data import embeddings


def answer_similarity(prediction: str, reference: str) -> float:
    """Cosine similarity of a prediction and its reference answer, rounded to 4 places (0.0 for an empty answer)."""
    if not (prediction or "").strip():
        return 0.0
    return round(embeddings.similarity(prediction, reference), 4)


def answer_similarities(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """`answer_similarity` for many rows, embedded in one batch."""
    scores = embeddings.pairwise_similarity([p or "" for p in predictions], references)
    return [round(score, 4) if (p or "").strip() else 0.0 for p, score in zip(predictions, scores, strict=True)]
