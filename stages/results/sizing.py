"""PR subsets sized to decide: a use case a PR changed runs as many rows as its `max_drop` needs.

`llmops size-subsets --baseline main --env pr` plans each changed use case from the baseline's evaluation
(`stages.results.plan`), caps the rows (`gate.sizing` in `conf/env/<env>.yaml`: rows, and LLM requests at the
baseline's requests per row), and prints the Hydra overrides (`+env.subset.by_use_case.<uc>=<rows>`) that
`make pr` passes to the pipeline. Unchanged use cases keep the small subset. The subset is a seeded ranking of
row ids, so the small subset's rows stay among the larger one's: the LLM cache answers the baseline's requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stages.metrics import headline
from stages.results import plan
from stages.results.gate import GateConfigError, Thresholds


@dataclass(frozen=True)
class Caps:
    """`gate.sizing`: the most rows, and the most LLM requests, a sized use case may run."""

    max_rows: int
    max_llm_requests: int | None = None


def parse_caps(block: Any, where: str) -> Caps | None:
    """`gate.sizing` of an env (None: no sizing); errors name the file and key."""
    if block is None:
        return None
    if not isinstance(block, Mapping) or not set(block) <= {"max_rows", "max_llm_requests"} or "max_rows" not in block:
        raise GateConfigError(
            f"{where}: expected {{max_rows: rows, max_llm_requests: requests or null}}, got {block!r}"
        )
    values = {}
    for key in ("max_rows", "max_llm_requests"):
        value = block.get(key)
        if value is None and key == "max_llm_requests":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GateConfigError(f"{where}.{key}: expected a whole number >= 1, got {value!r}")
        values[key] = value
    return Caps(**values)


@dataclass(frozen=True)
class Sized:
    """One use case's subset: the small one, or the rows its max_drop needs within the caps."""

    use_case: str
    changes: tuple[str, ...]
    small: int
    needed: int | None  # the most any headline metric needs (None: more than power.MAX_ROWS, or no plan)
    rows: int
    why: str


def needs(
    specs: Sequence[headline.MetricSpec],
    rows: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]] | None,
    limits: Thresholds,
    alpha: float,
) -> list[int | None]:
    """The rows each headline metric needs to detect its max_drop at `alpha`, planned on the baseline's
    evaluated `rows` (paired with its baseline variant's `other` when evaluated)."""
    return [p.rows_needed for spec in specs
            for p in plan.plan([spec], rows, other, None, limits.drop_limit(spec.name), alpha)]  # fmt: skip


def requests_per_row(run_rows: Sequence[Mapping[str, Any]], variants: int) -> float:
    """LLM requests per dataset row: the baseline run's mean per row, times the variants a run runs."""
    requests = [row["llm"].get("requests", 0) for row in run_rows if isinstance(row.get("llm"), Mapping)]
    return (sum(requests) / len(requests) if requests else 1.0) * variants


def size(
    use_case: str,
    changes: Sequence[str],
    small: int,
    needed: Sequence[int | None],
    dataset_rows: int,
    requests_per_row: float,
    caps: Caps,
) -> Sized:
    """The rows `use_case` runs: `small` when nothing changed, else the largest need of its metrics (`needed`),
    capped by the dataset, `caps.max_rows` and `caps.max_llm_requests` / `requests_per_row`."""
    if not changes:
        return Sized(use_case, (), small, None, small, "unchanged: the small subset")
    if not needed:
        return Sized(use_case, tuple(changes), small, None, small, "changed, but no headline metric to plan")
    wanted = None if not needed or any(n is None for n in needed) else max(n for n in needed if n is not None)
    limits = {"the dataset": dataset_rows, "max_rows": caps.max_rows}
    if caps.max_llm_requests is not None and requests_per_row > 0:
        limits["max_llm_requests"] = math.floor(caps.max_llm_requests / requests_per_row)
    cap_name, cap = min(limits.items(), key=lambda item: item[1])
    rows = max(small, cap if wanted is None else min(wanted, cap))
    if wanted is not None and wanted <= cap:
        why = f"changed: {wanted} rows detect max_drop"
    else:
        need = f"{wanted} rows" if wanted is not None else "more rows than can be planned"
        why = f"changed: max_drop needs {need}, capped by {cap_name} at {cap}"
    return Sized(use_case, tuple(changes), small, wanted, rows, why)


def overrides(sized: Sequence[Sized]) -> list[str]:
    """The Hydra overrides for the use cases that run more than the small subset."""
    return [subset_override(s.use_case, s.rows) for s in sized if s.rows > s.small]


def subset_override(use_case: str, rows: int) -> str:
    """The Hydra override that runs `rows` rows of `use_case` instead of the env's subset size."""
    return f"+env.subset.by_use_case.{use_case}={rows}"
