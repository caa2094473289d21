from promptflow.core import tool


@tool
def answered(prediction: object) -> bool:
    """A non-empty answer: text that is not blank, or any value but None and an empty list or object."""
    if isinstance(prediction, str):
        return bool(prediction.strip())
    return prediction not in (None, [], {})
