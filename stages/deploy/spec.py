"""What to deploy where: `conf/deploy/<env>.yaml`, read by `llmops deploy`, `smoke`, `rollback` and
`evaluate-production` (not by any DVC stage, so editing it reruns nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.yaml_reader import load_yaml

TARGETS = ("local", "azureml", "kubernetes", "webapp")


class SpecError(ValueError):
    """A deployment config that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Deployment:
    """One deployment behind the endpoint: the variant it serves and its share of traffic (percent)."""

    name: str
    variant: str
    weight: int


@dataclass(frozen=True)
class DeploymentSpec:
    """A use case's endpoint in one environment, on one target."""

    use_case: str
    env: str
    target: str
    endpoint: str
    flow: Path
    deployments: tuple[Deployment, ...]  # the new deployment first, the prior ones after
    instance_type: str
    instance_count: int
    env_vars: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # the target's own block: targets.<target>
    observability: Mapping[str, Any] = field(default_factory=dict)  # pii, guardrails (stages/observability)
    shadow: Deployment | None = None  # gets a copy of live traffic; its answers are never returned

    @property
    def weights(self) -> dict[str, int]:
        return {d.name: d.weight for d in self.deployments}

    @property
    def served(self) -> tuple[Deployment, ...]:
        """Every deployment that runs: the live ones, then the shadow (if any)."""
        return (*self.deployments, *((self.shadow,) if self.shadow else ()))


def load_spec(root: Path, use_case: str, env: str, target: str, params: Mapping[str, Any]) -> DeploymentSpec:
    """Read `conf/deploy/<env>.yaml` (top-level defaults, then `use_cases.<use_case>` overrides) for one target.

    `params` is the composed params.yaml: it gives the use case's flow folder and its variants.
    """
    path = root / "conf" / "deploy" / f"{env}.yaml"
    if not path.is_file():
        raise SpecError(f"{path}: no deployment config for env {env!r}")
    raw = load_yaml(path.read_text()) or {}
    where = path.relative_to(root)
    if use_case not in params.get("use_cases", {}):
        raise SpecError(f"{where}: unknown use case {use_case!r} (not in params.yaml use_cases)")
    uc = params["use_cases"][use_case]
    merged = {k: v for k, v in raw.items() if k != "use_cases"} | (raw.get("use_cases") or {}).get(use_case, {})

    def need(key: str) -> Any:
        if key not in merged:
            raise SpecError(f"{where}: missing key {key!r} (top level or use_cases.{use_case}.{key})")
        return merged[key]

    if target not in TARGETS:
        raise SpecError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    deployments = []
    for i, entry in enumerate(need("deployments")):
        key = f"deployments[{i}]"
        missing = {"name", "variant", "weight"} - set(entry)
        if missing:
            raise SpecError(f"{where}: {key} lacks {', '.join(sorted(missing))}")
        if entry["variant"] not in uc.get("variants", {}):
            raise SpecError(f"{where}: {key}.variant {entry['variant']!r} is not a variant of {use_case}")
        if not isinstance(entry["weight"], int) or not 0 <= entry["weight"] <= 100:
            raise SpecError(f"{where}: {key}.weight must be an integer percent, got {entry['weight']!r}")
        deployments.append(Deployment(str(entry["name"]), str(entry["variant"]), entry["weight"]))
    names = [d.name for d in deployments]
    if not deployments or len(set(names)) != len(names):
        raise SpecError(f"{where}: deployments must be non-empty with unique names, got {names}")
    if sum(d.weight for d in deployments) != 100:
        raise SpecError(f"{where}: deployment weights must sum to 100, got {sum(d.weight for d in deployments)}")
    instance = need("instance")
    shadow = merged.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, dict) or set(shadow) != {"name", "variant"}:
            raise SpecError(f"{where}: shadow must be {{name, variant}} or null, got {shadow!r}")
        if shadow["variant"] not in uc.get("variants", {}):
            raise SpecError(f"{where}: shadow.variant {shadow['variant']!r} is not a variant of {use_case}")
        if shadow["name"] in names:
            raise SpecError(f"{where}: shadow.name {shadow['name']!r} is also a live deployment")
        shadow = Deployment(str(shadow["name"]), str(shadow["variant"]), 0)
    return DeploymentSpec(
        use_case=use_case,
        env=env,
        target=target,
        endpoint=str(need("endpoint")).format(use_case=use_case.replace("_", "-"), env=env),
        flow=root / uc["flow"],
        deployments=tuple(deployments),
        instance_type=str(instance["type"]),
        instance_count=int(instance["count"]),
        env_vars={str(k): str(v) for k, v in (merged.get("env_vars") or {}).items()},
        options=(merged.get("targets") or {}).get(target, {}),
        observability=dict(merged.get("observability") or {}),
        shadow=shadow,
    )
