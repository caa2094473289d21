"""Metrics or operations: which figures of a stage's summary say what the results are, and which say how the run
went.

Metrics (quality, errors, latency, the tokens and cost of every answer) go to the files dvc.yaml registers as
`metrics:` (run/summary.json, eval/metrics.json): git-tracked, what `dvc metrics diff` and `dvc exp show` show.
Operations (LLM cache counts, requests sent and retried, the cached part of tokens and cost, wall time, rows/s)
change with the state of the LLM cache and the machine, not with the results: they go to `operations.json` beside
them, a DVC-cached output (gitignored), so neither `dvc metrics diff` nor `git status` lists a cache counter.
"""

from __future__ import annotations

from typing import Any

# key -> None (the whole value is operational) or the operational parts of a block that also holds metrics
OPERATIONAL: dict[str, tuple[str, ...] | None] = {
    "wall_s": None,
    "rows_per_s": None,
    "cache": None,
    "llm_requests": None,
    "tokens": ("prompt_cached", "completion_cached"),
    "cost": ("usd_cached",),
}


def split(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, operations) of a stage's summary, its other variants' (`variants`) split the same way. Both keep
    `variant` and `baseline`, so each file says what it describes."""
    metrics: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "variants":
            parts = {name: split(block) for name, block in value.items()}
            metrics[key] = {name: part[0] for name, part in parts.items()}
            operations[key] = {name: part[1] for name, part in parts.items()}
        elif key in ("variant", "baseline"):
            metrics[key] = operations[key] = value
        elif key not in OPERATIONAL:
            metrics[key] = value
        elif (parts := OPERATIONAL[key]) is None:
            operations[key] = value
        else:
            metrics[key] = {part: v for part, v in value.items() if part not in parts}
            operations[key] = {part: v for part, v in value.items() if part in parts}
    return metrics, operations


def of_variant(operations: dict[str, Any], variant: str) -> dict[str, Any]:
    """One variant's block of an operations file (the selected variant's at the top, the others in `variants`);
    empty when the file or the variant is not there (an old revision, a file not pulled)."""
    if operations.get("variant") == variant:
        return {key: value for key, value in operations.items() if key != "variants"}
    return (operations.get("variants") or {}).get(variant) or {}
