"""The quality gate's thresholds: the `gate` block of the composed params (`env.gate`: `defaults`, overridden per
use case), checked key by key; errors name the file and the key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stages.metrics import headline
from stages.results.compare import CompareError

POLICIES = ("fail", "warn", "pass")  # what an inconclusive quality check does
NO_DROP, NONINFERIOR, EQUIVALENT = "no_drop", "noninferior", "equivalent"
REQUIREMENTS = (NO_DROP, NONINFERIOR, EQUIVALENT)
_DEFAULT_KEYS = ("floors", "max_drop", "max_cost_increase", "max_p95_latency_increase", "latency_min_rows",
                 "inconclusive", "require")  # fmt: skip
_TOP_KEYS = ("max_error_rate", "alpha", "defaults", "use_cases", "sizing")


class GateConfigError(ValueError):
    """A `gate` block that cannot be used; the message names the file and the key."""


# What stops the gate from running at all (bad config, an unknown revision), as opposed to a failed check.
ERRORS = (GateConfigError, CompareError, headline.MetricSpecError)


@dataclass(frozen=True)
class Thresholds:
    """One use case's limits: `defaults` with the use case's overrides applied."""

    max_error_rate: float
    floors: Mapping[str, float] = field(default_factory=dict)
    max_drop: float = 0.05
    max_drop_by_metric: Mapping[str, float] = field(default_factory=dict)
    max_cost_increase: float | None = None
    max_p95_latency_increase: float | None = None
    latency_min_rows: int = 5
    alpha: float = 0.05  # the gate's family-wise error rate (quality checks, Holm-adjusted)
    inconclusive_changed: str = "pass"  # POLICIES: for a use case the revision changed (or unknown)
    inconclusive_unchanged: str = "pass"  # ... and for one it did not
    require: str = NO_DROP  # REQUIREMENTS: what a quality check asks; max_drop is the margin of the other two

    def inconclusive_policy(self, changed: bool) -> str:
        return self.inconclusive_changed if changed else self.inconclusive_unchanged

    def drop_limit(self, metric: str) -> float:
        return self.max_drop_by_metric.get(metric, self.max_drop)


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise GateConfigError(f"{where}: expected a number >= 0{' or null' if optional else ''}, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise GateConfigError(f"{where}: expected {{metric: number}}, got {value!r}")
    return {str(metric): float(_number(limit, f"{where}.{metric}") or 0.0) for metric, limit in value.items()}


def _policy(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not set(value) <= {"changed", "unchanged"}:
        raise GateConfigError(
            f"{where}: expected {{changed: fail|warn|pass, unchanged: fail|warn|pass}}, got {value!r}"
        )
    out = {}
    for side, policy in value.items():
        if policy not in POLICIES:
            raise GateConfigError(f"{where}.{side}: expected one of {', '.join(POLICIES)}, got {policy!r}")
        out[f"inconclusive_{side}"] = policy
    return out


def _apply(base: dict[str, Any], block: Any, where: str) -> dict[str, Any]:
    """`base` with the keys of `block` (one of `defaults` or a use case's) checked and applied."""
    if not isinstance(block, Mapping):
        raise GateConfigError(f"{where}: expected a mapping, got {block!r}")
    out = dict(base)
    for key, value in block.items():
        at = f"{where}.{key}"
        if key == "floors":
            out["floors"] = {**out.get("floors", {}), **_numbers(value, at)}
        elif key == "max_drop" and isinstance(value, Mapping):
            out["max_drop_by_metric"] = {**out.get("max_drop_by_metric", {}), **_numbers(value, at)}
        elif key in ("max_drop", "max_cost_increase", "max_p95_latency_increase"):
            out[key] = _number(value, at, optional=key != "max_drop")
        elif key == "latency_min_rows":
            out[key] = int(_number(value, at) or 0)
        elif key == "inconclusive":
            out.update(_policy(value, at))
        elif key == "require":
            if value not in REQUIREMENTS:
                raise GateConfigError(f"{at}: expected one of {', '.join(REQUIREMENTS)}, got {value!r}")
            out[key] = value
        else:
            raise GateConfigError(f"{at}: unknown key (known: {', '.join(_DEFAULT_KEYS)})")
    return out


def parse_thresholds(block: Any, use_cases: Sequence[str], where: str) -> dict[str, Thresholds]:
    """Every use case's thresholds from a `gate` block; `where` names it in errors (e.g. 'conf/env/pr.yaml: gate')."""
    if not isinstance(block, Mapping):
        raise GateConfigError(f"{where}: missing or not a mapping (max_error_rate, defaults, use_cases)")
    if unknown := sorted(set(block) - set(_TOP_KEYS)):
        raise GateConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(_TOP_KEYS)})")
    base: dict[str, Any] = {"max_error_rate": _number(block.get("max_error_rate"), f"{where}.max_error_rate")}
    if "alpha" in block:
        alpha = block["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise GateConfigError(f"{where}.alpha: expected a number between 0 and 1, got {alpha!r}")
        base["alpha"] = float(alpha)
    base = _apply(base, block.get("defaults") or {}, f"{where}.defaults")
    overrides = block.get("use_cases") or {}
    if not isinstance(overrides, Mapping):
        raise GateConfigError(f"{where}.use_cases: expected {{use case: limits}}, got {overrides!r}")
    if unknown := sorted(set(overrides) - set(use_cases)):
        raise GateConfigError(f"{where}.use_cases.{unknown[0]}: no such use case (known: {', '.join(use_cases)})")
    return {uc: Thresholds(**_apply(base, overrides.get(uc) or {}, f"{where}.use_cases.{uc}")) for uc in use_cases}
