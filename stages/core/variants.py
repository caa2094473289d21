"""Which variants of a use case a pipeline run executes: the selected one and the baseline it is compared with.

`variant` (conf/config.yaml's `variant` group) selects the candidate for every use case that has it; a use case
without that variant runs its baseline. A variant one use case names itself (`use_cases.<uc>.variant=v2`) must be
one it defines: a typo there is an error, never a silent run of the baseline. `use_cases.<uc>.baseline` names the
variant every other is compared with (default: the first declared). Both run, so each report compares them row by
row.

A DAG flow's own prompt flow node variants are selected per node: a variant's `node_variants` ({node: variant id}),
then, for the selected variant only, the use case's `node_variants` (null keeps the variant's choice), so a sweep
over `use_cases.<uc>.node_variants.<node>` runs every combination against an unchanged baseline.
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


def plan(name: str, use_case: Mapping[str, Any], global_variant: str | None = None) -> VariantPlan:
    """The variant plan of use case `name` from its params (`variants`, `variant`, optional `baseline`). Only
    `global_variant` (params.yaml `variant.name`) falls back to the baseline when the use case lacks it."""
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
    if requested not in variants and requested != global_variant:
        raise VariantError(
            f"use_cases.{name}.variant: no variant {requested!r} in conf/use_cases/{name}.yaml (it defines "
            f"{', '.join(variants)}); only the global `variant=` runs the baseline of a use case without it"
        )
    selected = requested if requested in variants else baseline
    return VariantPlan(selected=selected, baseline=baseline, requested=requested)


def plan_for(params: Mapping[str, Any], name: str) -> VariantPlan:
    """The variant plan of use case `name` in the composed params (its block and the global `variant.name`)."""
    return plan(name, params["use_cases"][name], (params.get("variant") or {}).get("name"))


def config(name: str, use_case: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The config block of one variant (llm_node, prompt, params, node_inputs)."""
    try:
        return dict(use_case["variants"][variant])
    except KeyError:
        raise VariantError(f"use_cases.{name}.variants.{variant}: no such variant") from None


def node_variants(name: str, use_case: Mapping[str, Any], variant: str, selected: str) -> dict[str, tuple[str, str]]:
    """The node variants variant `variant` selects, {node: (variant id, the params key that chose it)}: its own
    `node_variants`, and when it is the `selected` variant the use case's `node_variants` on top."""
    layers = [
        (f"use_cases.{name}.variants.{variant}.node_variants", config(name, use_case, variant).get("node_variants"))
    ]
    if variant == selected:
        layers.append((f"use_cases.{name}.node_variants", use_case.get("node_variants")))
    chosen: dict[str, tuple[str, str]] = {}
    for key, layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise VariantError(f"{key}: expected {{node: variant id}}, got {layer!r} (conf/use_cases/{name}.yaml)")
        for node, variant_id in layer.items():
            if variant_id is None:
                continue
            if not isinstance(variant_id, str) or not variant_id:
                raise VariantError(
                    f"{key}.{node}: expected a variant id, got {variant_id!r} (conf/use_cases/{name}.yaml)"
                )
            chosen[str(node)] = (variant_id, f"{key}.{node}")
    return chosen


def deployed_node_variants(name: str, use_case: Mapping[str, Any], variant: str) -> dict[str, str]:
    """{node: variant id} of `variant` as a pipeline run runs it (`node_variants`, with the use case's layer when
    it is the selected variant): what a deployment of it serves."""
    requested = use_case.get("variant")  # params were checked when loaded (conf_schema): only the selection matters
    chosen = node_variants(name, use_case, variant, plan(name, use_case, requested).selected)
    return {node: variant_id for node, (variant_id, _) in chosen.items()}
