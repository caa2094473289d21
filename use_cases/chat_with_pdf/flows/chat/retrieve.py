from functools import lru_cache
from pathlib import Path

from promptflow.core import tool

from stages.core import embeddings, vector_index

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=2)
def load_index(folder: str) -> vector_index.Index:
    """The vector index in `folder` (relative to this flow), loaded once per process."""
    index = vector_index.load(HERE / folder)
    if index.model != embeddings.MODEL_NAME:
        raise vector_index.VectorIndexError(
            f"{HERE / folder}: built with {index.model}, but questions are embedded with {embeddings.MODEL_NAME}"
        )
    return index


def format_context(chunks: list[dict]) -> str:
    """The retrieved chunks as the prompt's context: one chunk per line, best first."""
    return "\n".join(chunk["text"] for chunk in chunks)


@tool
def retrieve(question: str, top_k: int = 3, index: str = "index") -> dict:
    """The `top_k` chunks closest to the question (cosine similarity of MiniLM embeddings), best first."""
    hits = load_index(index).search(embeddings.encode([question])[0], int(top_k))
    retrieved = [{**chunk, "score": score} for chunk, score in hits]
    return {"context": format_context(retrieved), "retrieved": retrieved}
