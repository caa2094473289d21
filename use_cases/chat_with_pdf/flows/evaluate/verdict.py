from promptflow.core import tool

from stages.metrics import judge


@tool
def verdict(answer: str) -> dict:
    """The judge's 1-5 score, or (when its answer holds none) the row's judge error."""
    return judge.verdict(answer).as_outputs("groundedness")
