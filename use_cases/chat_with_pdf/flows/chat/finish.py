from promptflow.core import tool


@tool
def finish(answer: str) -> str:
    """The model's answer without the leading space and anything after its first line."""
    lines = (answer or "").strip().splitlines()
    return lines[0].strip() if lines else ""
