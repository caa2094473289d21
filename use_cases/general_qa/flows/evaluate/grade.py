from promptflow.core import tool

from stages.metrics import text


@tool
def grade(answer: str, aliases: list, prediction: str) -> dict:
    """exact: the prediction is the answer or an alias; contains: one of them appears in it; plus overlap scores."""
    prediction = prediction or ""
    return {
        "exact": text.exact_match(prediction, [answer, *aliases]),
        "contains": text.contains_match(prediction, [answer, *aliases]),
        "token_f1": round(max(text.token_f1(prediction, a) for a in [answer, *aliases]), 4),
        "rouge_l": round(max(text.rouge_l(prediction, a) for a in [answer, *aliases]), 4),
    }
