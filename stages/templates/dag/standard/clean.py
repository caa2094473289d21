from promptflow.core import tool


@tool
def clean(text: str) -> str:
    """Trim the model's answer."""
    return (text or "").strip()
