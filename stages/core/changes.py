"""What a revision changed in a use case, read off two `dvc.lock` files (the baseline's and the workspace's).

A use case changed when, in its prepare, run or evaluate stage, a dependency outside `data/` and `stages/` has
another hash (its dataset, its flow or evaluation flow folder with their prompts) or a parameter other than
`env.*` has another value (the LLM, the variant, the use case's config). Derived data under `data/` differs with
the env's subset and is left out; the project's own code (`stages/`) is checked by its tests, not by the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STAGES = ("prepare", "run", "evaluate")
_IGNORED_DEPS = ("data/", "stages/")
_IGNORED_PARAMS = ("env.",)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as {dotted key: value}."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _stage_inputs(lock: Mapping[str, Any], stage: str) -> tuple[dict[str, str], dict[str, Any]] | None:
    entry = (lock.get("stages") or {}).get(stage)
    if not isinstance(entry, Mapping):
        return None
    deps = {
        str(dep.get("path")): str(dep.get("md5") or dep.get("hash") or "")
        for dep in entry.get("deps") or []
        if isinstance(dep, Mapping) and not str(dep.get("path", "")).startswith(_IGNORED_DEPS)
    }
    params: dict[str, Any] = {}
    for values in (entry.get("params") or {}).values():
        params.update(_flat(values))
    return deps, {key: value for key, value in params.items() if not key.startswith(_IGNORED_PARAMS)}


def changes(baseline_lock: Mapping[str, Any], workspace_lock: Mapping[str, Any], use_case: str) -> list[str]:
    """What differs for `use_case` between the two locks, one phrase each ([]: nothing changed)."""
    found: list[str] = []
    for stage in (f"{name}@{use_case}" for name in STAGES):
        old, new = _stage_inputs(baseline_lock, stage), _stage_inputs(workspace_lock, stage)
        if old is None or new is None:
            if old != new:
                found.append(f"{stage} {'added' if old is None else 'removed'}")
            continue
        (old_deps, old_params), (new_deps, new_params) = old, new
        found += [f"{path} changed" for path in sorted(set(old_deps) | set(new_deps))
                  if old_deps.get(path) != new_deps.get(path)]  # fmt: skip
        found += [f"param {key} changed" for key in sorted(set(old_params) | set(new_params))
                  if old_params.get(key) != new_params.get(key)]  # fmt: skip
    return list(dict.fromkeys(found))
