import re

from labels import LABELS, OTHER, SYNONYMS
from promptflow.core import tool

_BY_LOWER = {label.lower(): label for label in LABELS}


@tool
def normalize(answer: str) -> dict:
    """Map the model's free-text answer to a known label; unknown answers become OTHER, raw text kept."""
    raw = answer or ""
    words = re.findall(r"[A-Za-z]+", raw)
    first = words[0].lower() if words else ""
    label = _BY_LOWER.get(first) or SYNONYMS.get(first)
    return {"category": label or OTHER, "valid": label is not None, "raw": raw}
