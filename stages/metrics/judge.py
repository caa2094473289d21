"""LLM-as-judge: rubric prompts, turning a judge's answer into a 1-5 score (or an error, never a guess), and the
one metric shape every judge reports.

A judge is an LLM node of an evaluation flow whose prompt is a rubric of this library (`rubrics/<name>.jinja2`
for the completion API, few-shot for base models; `rubrics/<name>.chat.jinja2` for the chat API). The evaluate
stage binds the node to the judge connection (`judge` in params, set apart from the flow's `llm`) and picks the
rubric file for that connection's API (`evaluate.judges.<node>.rubric`). The flow's verdict node
(`stages/engine/promptflow/judge_verdicts.py`) reads each answer; its aggregation node reports `judge_metrics`.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOWEST, HIGHEST = 1, 5
RUBRICS = Path(__file__).resolve().parent / "rubrics"
_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ERROR_SUFFIX = "_error"


class UnparseableJudgeAnswer(ValueError):
    """The judge's answer holds no score on the rubric's scale; the message quotes the answer."""


class UnknownRubric(ValueError):
    """A rubric the library does not have; the message lists the ones it has."""


def rubric_names() -> list[str]:
    """The rubrics of the library: each has a completion and a chat prompt."""
    return sorted(path.name.removesuffix(".jinja2") for path in RUBRICS.glob("*.jinja2") if ".chat." not in path.name)


def rubric_prompt(name: str) -> dict[str, str]:
    """The prompt files of rubric `name` per LLM API: {'completion': path, 'chat': path} (absolute paths)."""
    files = {"completion": RUBRICS / f"{name}.jinja2", "chat": RUBRICS / f"{name}.chat.jinja2"}
    if not all(path.is_file() for path in files.values()):
        raise UnknownRubric(f"no rubric {name!r} in {RUBRICS} (has {', '.join(rubric_names())})")
    return {api: str(path) for api, path in files.items()}


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
        return {name: self.score, f"{name}{_ERROR_SUFFIX}": self.error}


def verdict(answer: str, lowest: int = LOWEST, highest: int = HIGHEST) -> Verdict:
    """`parse_score` that records an unparseable answer as the row's error instead of raising."""
    try:
        return Verdict(parse_score(answer, lowest, highest), None)
    except UnparseableJudgeAnswer as exc:
        return Verdict(None, str(exc))


def verdicts(answers: Mapping[str, str]) -> dict[str, int | str | None]:
    """One row's verdicts of several judges ({judge: answer}): `<judge>` and `<judge>_error` for each."""
    outputs: dict[str, int | str | None] = {}
    for name, answer in answers.items():
        outputs.update(verdict(answer).as_outputs(name))
    return outputs


def mean_score(scores: Iterable[int | None]) -> float | None:
    """The mean of the scores that exist (None when the judge scored nothing)."""
    present = [score for score in scores if score is not None]
    return round(statistics.fmean(present), 4) if present else None


def judge_names(row: Mapping[str, Any]) -> list[str]:
    """The judges in a row of `verdicts` outputs: every `<judge>` that has a `<judge>_error` beside it."""
    names = [key.removesuffix(_ERROR_SUFFIX) for key in row if key.endswith(_ERROR_SUFFIX)]
    return [name for name in names if name in row]


def judge_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | int]:
    """Every judge's `<judge>.scored` and `<judge>.errors` (unparseable answers) and, when it scored any row,
    `<judge>.mean` over the scored rows; the evaluate stage nests them as `<judge>: {mean, scored, errors}`.
    """
    metrics: dict[str, float | int] = {}
    for name in judge_names(rows[0]) if rows else []:
        scores = [row[name] for row in rows]
        metrics[f"{name}.scored"] = sum(score is not None for score in scores)
        metrics[f"{name}.errors"] = sum(row[f"{name}{_ERROR_SUFFIX}"] is not None for row in rows)
        mean = mean_score(scores)
        if mean is not None:
            metrics[f"{name}.mean"] = mean
    return metrics
