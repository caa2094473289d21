"""Which variants of a use case a pipeline run executes: the selected one and the baseline it is compared with.

`variant` (conf/config.yaml's `variant` group, or `use_cases.<uc>.variant`) selects the candidate for every use
case that has it; a use case without that variant runs its baseline. `use_cases.<uc>.baseline` names the variant
every other is compared with (default: the first declared). Both run, so each report compares them row by row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class VariantError(ValueError):
    """A use case's variant config that cannot be used; the message names the key."""


@dataclass(frozen=True)
class VariantPlan:
    selected: str  # the candidate: what the headline metrics, the gate and deployment use
    baseline: str  # what the selected variant is compared with
    requested: str  # the variant asked for; differs from `selected` when the use case lacks it

    @property
    def names(self) -> tuple[str, ...]:
        """The variants to run, baseline first (one name when the selected variant is the baseline)."""
        return (self.baseline,) if self.selected == self.baseline else (self.baseline, self.selected)

    @property
    def fell_back(self) -> bool:
        return self.requested != self.selected


def plan(name: str, use_case: Mapping[str, Any]) -> VariantPlan:
    """The variant plan of use case `name` from its params (`variants`, `variant`, optional `baseline`)."""
    variants = use_case.get("variants") or {}
    if not isinstance(variants, Mapping) or not variants:
        raise VariantError(f"use_cases.{name}.variants: no variants declared (conf/use_cases/{name}.yaml)")
    baseline = use_case.get("baseline") or next(iter(variants))
    if baseline not in variants:
        raise VariantError(
            f"use_cases.{name}.baseline: {baseline!r} is not one of its variants ({', '.join(variants)}) "
            f"(conf/use_cases/{name}.yaml)"
        )
    requested = str(use_case.get("variant") or baseline)
    selected = requested if requested in variants else baseline
    return VariantPlan(selected=selected, baseline=baseline, requested=requested)


def config(name: str, use_case: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The config block of one variant (llm_node, prompt, params, node_inputs)."""
    try:
        return dict(use_case["variants"][variant])
    except KeyError:
        raise VariantError(f"use_cases.{name}.variants.{variant}: no such variant") from None
