from promptflow.core import tool

from stages.metrics import retrieval, similarity


@tool
def grade(answer: str, prediction: str, retrieved: list, gold_doc: str, gold_quote: str, threshold: float) -> dict:
    """Rank of the first retrieved chunk from the gold document holding the gold quote; answer similarity.

    `correct` is similarity >= threshold: a generative answer is right when it means the reference answer.
    """
    score = similarity.answer_similarity(prediction, answer)
    return {
        "rank": retrieval.first_relevant_rank(
            [item["id"] for item in retrieved], retrieval.gold_ids(retrieved, gold_doc, gold_quote)
        ),
        "similarity": score,
        "correct": score >= threshold,
    }
