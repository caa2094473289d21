"""LLM-as-judge: turning a judge model's answer into a 1-5 score, or into an error, never into a guess.

The judge itself is an LLM node of an evaluation flow (its prompt lives with the flow); the evaluate stage binds
that node to the judge connection (`judge` in params, set separately from the flow's `llm`). This module only
reads the answer: a score that cannot be found is that row's error, and aggregates skip it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

LOWEST, HIGHEST = 1, 5
_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class UnparseableJudgeAnswer(ValueError):
    """The judge's answer holds no score on the rubric's scale; the message quotes the answer."""


def parse_score(answer: str, lowest: int = LOWEST, highest: int = HIGHEST) -> int:
    """The score in a judge's answer: its first number, which must be a whole number from `lowest` to `highest`.

    "4", " 4/5", "Score: 4" give 4; "", "great", "7", "3.5" raise UnparseableJudgeAnswer.
    """
    match = _FIRST_NUMBER.search(answer or "")
    if match is None:
        raise UnparseableJudgeAnswer(f"judge answer {answer!r} holds no score from {lowest} to {highest}")
    value = float(match.group())
    if not value.is_integer() or not lowest <= value <= highest:
        raise UnparseableJudgeAnswer(
            f"judge answer {answer!r}: {match.group()} is not a score from {lowest} to {highest}"
        )
    return int(value)


@dataclass(frozen=True)
class Verdict:
    """One row's judgement: a score, or the error saying why there is none."""

    score: int | None
    error: str | None

    def as_outputs(self, name: str) -> dict[str, int | str | None]:
        """Flow outputs for a judge called `name`: `<name>` (the score or None) and `<name>_error`."""
        return {name: self.score, f"{name}_error": self.error}


def verdict(answer: str, lowest: int = LOWEST, highest: int = HIGHEST) -> Verdict:
    """`parse_score` that records an unparseable answer as the row's error instead of raising."""
    try:
        return Verdict(parse_score(answer, lowest, highest), None)
    except UnparseableJudgeAnswer as exc:
        return Verdict(None, str(exc))


def mean_score(scores: Iterable[int | None]) -> float | None:
    """The mean of the scores that exist (None when the judge scored nothing)."""
    present = [score for score in scores if score is not None]
    return round(statistics.fmean(present), 4) if present else None
