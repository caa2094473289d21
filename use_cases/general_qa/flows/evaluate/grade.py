import re

from promptflow.core import tool

_ARTICLES = re.compile(r"\b(the|a|an)\b")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and English articles, squeeze spaces: 'The Nile.' -> 'nile'."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


@tool
def grade(answer: str, aliases: list, prediction: str) -> dict:
    """exact: the prediction is the answer or an alias; contains: one of them appears in the prediction."""
    accepted = {normalize(a) for a in [answer, *aliases] if normalize(a)}
    guess = normalize(prediction or "")
    return {
        "exact": guess in accepted,
        "contains": any(re.search(rf"\b{re.escape(a)}\b", guess) for a in accepted),
    }
