import re

from promptflow.core import tool


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@tool
def grade(expected: str, predicted: str) -> bool:
    return _normalize(expected) == _normalize(predicted or "")
