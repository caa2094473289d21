from promptflow.core import tool


@tool
def grade(groundtruth: str, prediction: str) -> bool:
    """A row is correct when the normalized prediction equals the label (case-insensitive)."""
    return groundtruth.strip().lower() == prediction.strip().lower()
