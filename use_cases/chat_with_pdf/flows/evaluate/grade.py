from promptflow.core import tool

from stages.data import similarity
from stages.metrics import retrieval


@tool
def grade(answer: str, prediction: str, retrieved: list, gold_doc: str, gold_quote: str, threshold: float) -> dict:
    """Rank of the first retrieved chunk from the gold document holding the gold quote (a hit when there is one,
    and its reciprocal rank); answer similarity.

    `correct` is similarity >= threshold: a generative answer is right when it means the reference answer.
    """
    score = similarity.answer_similarity(prediction, answer)
    rank = retrieval.first_relevant_rank(
        [item["id"] for item in retrieved], retrieval.gold_ids(retrieved, gold_doc, gold_quote)
    )
    return {
        "rank": rank,
        "hit": rank is not None,
        "reciprocal_rank": 1.0 / rank if rank else 0.0,
        "similarity": score,
        "correct": score >= threshold,
    }
