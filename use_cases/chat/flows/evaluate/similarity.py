from promptflow.core import tool

from stages.data.similarity import answer_similarity


@tool
def similarity(answer: str, reference: str, threshold: float) -> dict:
    """Cosine similarity of the answer and the reference answer; `similar` when it reaches `threshold`."""
    score = answer_similarity(answer, reference)
    return {"similarity": score, "similar": score >= threshold}
