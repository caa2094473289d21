"""A vector index small enough for exact search: unit vectors in a .npy matrix beside the chunks they embed.

Layout of an index folder: `vectors.npy` (n x d float32, L2-normalised), `chunks.jsonl` (row i describes
vector i: id, doc, page, section, text) and `meta.json` (the embedding model, so a query is embedded alike).
Cosine similarity is a dot product; at a few hundred chunks exact search takes well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.io import atomic_open, read_json, read_jsonl, write_json, write_jsonl

if TYPE_CHECKING:
    import numpy as np


class VectorIndexError(ValueError):
    """An index folder that is missing or inconsistent; the message names the folder and the file."""


@dataclass(frozen=True)
class Index:
    chunks: list[dict[str, Any]]
    vectors: np.ndarray
    model: str

    def search(self, query: np.ndarray, k: int) -> list[tuple[dict[str, Any], float]]:
        """The `k` chunks closest to the unit vector `query`, best first (ties broken by chunk order)."""
        import numpy as np

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores = self.vectors @ query.astype(np.float32, copy=False)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [(self.chunks[i], round(float(scores[i]), 4)) for i in order]


def write(folder: Path, chunks: Sequence[dict[str, Any]], vectors: np.ndarray, model: str) -> None:
    """Write an index folder; each file is replaced atomically."""
    import numpy as np

    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / "vectors.npy", "wb") as handle:
        np.save(handle, np.asarray(vectors, dtype=np.float32))
    write_jsonl(folder / "chunks.jsonl", chunks)
    write_json(folder / "meta.json", {"model": model, "chunks": len(chunks), "dimensions": int(vectors.shape[1])})


def load(folder: Path) -> Index:
    """Read an index folder written by `write`."""
    import numpy as np

    files = [folder / name for name in ("vectors.npy", "chunks.jsonl", "meta.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise VectorIndexError(f"{folder}: not an index, {', '.join(missing)} missing (run `dvc repro` to build it)")
    vectors = np.load(files[0])
    chunks = read_jsonl(files[1])
    if len(chunks) != len(vectors):
        raise VectorIndexError(f"{folder}: chunks.jsonl has {len(chunks)} rows but vectors.npy has {len(vectors)}")
    return Index(chunks, vectors, read_json(files[2])["model"])
