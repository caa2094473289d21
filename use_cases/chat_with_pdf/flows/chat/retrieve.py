from functools import lru_cache
from pathlib import Path

from promptflow.core import tool

from stages.data import embeddings, vector_index

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
def retrieve(question: str, query: str = "", top_k: int = 3, index: str = "index") -> dict:
    """The `top_k` chunks closest to the question and its search text `query` (the rewrite node's keywords or
    hypothetical answer), by cosine similarity of MiniLM embeddings, best first."""
    search = f"{question}\n{query.strip()}" if query and query.strip() else question
    hits = load_index(index).search(embeddings.encode([search])[0], int(top_k))
    retrieved = [{**chunk, "score": score} for chunk, score in hits]
    return {"context": format_context(retrieved), "retrieved": retrieved}
