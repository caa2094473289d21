import re

from promptflow.core import tool

from stages.core.sandbox import extract_code, run_python

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def last_number(text: str) -> float | None:
    """The last number a program printed ("1,331" and "$20.00" included), or None."""
    numbers = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))
    return float(numbers[-1]) if numbers else None


@tool
def execute(answer: str, timeout_s: float = 5, memory_mb: int = 256) -> dict:
    """Run the program the LLM wrote in the sandbox; its answer is the last number it prints.

    valid is false when the program fails, times out or prints no number; the reason is in error.
    """
    code = extract_code(answer).strip()
    result = run_python(code, timeout_s=timeout_s, memory_mb=memory_mb)
    number = last_number(result.stdout) if result.status == "ok" else None
    error = result.error or (None if number is not None else "the program printed no number")
    return {"answer": number, "valid": number is not None, "status": result.status, "error": error,
            "code": code, "stdout": result.stdout[-500:]}  # fmt: skip
