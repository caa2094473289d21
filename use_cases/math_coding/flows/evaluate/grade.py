import math

from promptflow.core import tool


def close_enough(expected: float, predicted: object, rel_tol: float, abs_tol: float) -> bool:
    """True when `predicted` is a finite number within rel_tol or abs_tol of `expected` (None is wrong)."""
    if isinstance(predicted, bool) or not isinstance(predicted, int | float) or not math.isfinite(predicted):
        return False
    return math.isclose(float(predicted), float(expected), rel_tol=rel_tol, abs_tol=abs_tol)


@tool
def grade(expected: float, predicted: object, status: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> dict:
    return {"correct": close_enough(expected, predicted, rel_tol, abs_tol), "status": status}
