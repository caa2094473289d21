from promptflow.core import tool

from stages.metrics.judge import verdict as read_verdict


@tool
def verdict(judgement: str) -> dict:
    """The judge's 1-5 relevance score, or the row's relevance_error when its answer holds no score."""
    return read_verdict(judgement).as_outputs("relevance")
