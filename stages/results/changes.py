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


Path = tuple[str, ...]  # a param's keys from the top (a model name may hold dots: "gpt-4.1")


def _flat(value: Any, prefix: Path) -> dict[Path, Any]:
    """Nested params as {key path: leaf value}."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    out: dict[Path, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, (*prefix, str(key))))
    return out


def _stage_inputs(lock: Mapping[str, Any], stage: str) -> tuple[dict[str, str], dict[Path, Any]] | None:
    entry = (lock.get("stages") or {}).get(stage)
    if not isinstance(entry, Mapping):
        return None
    deps = {
        str(dep.get("path")): str(dep.get("md5") or dep.get("hash") or "")
        for dep in entry.get("deps") or []
        if isinstance(dep, Mapping) and not str(dep.get("path", "")).startswith(_IGNORED_DEPS)
    }
    params: dict[Path, Any] = {}
    for values in (entry.get("params") or {}).values():
        for declared, value in (values or {}).items():  # a key as dvc.yaml declares it, e.g. use_cases.uc.flow
            params.update(_flat(value, tuple(str(declared).split("."))))
    return deps, {key: value for key, value in params.items() if not ".".join(key).startswith(_IGNORED_PARAMS)}


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
        found += [f"param {'.'.join(key)} changed" for key in sorted(set(old_params) | set(new_params))
                  if old_params.get(key) != new_params.get(key)]  # fmt: skip
    return list(dict.fromkeys(found))


def inputs(lock: Mapping[str, Any], use_case: str) -> tuple[list[str], dict[Path, Any]]:
    """The dependency paths (outside data/ and stages/) and params (but env.*) the use case's stages had in `lock`."""
    paths: list[str] = []
    params: dict[Path, Any] = {}
    for stage in (f"{name}@{use_case}" for name in STAGES):
        found = _stage_inputs(lock, stage)
        if found is not None:
            paths += [path for path in found[0] if path not in paths]
            params.update(found[1])
    return paths, params


def param_at(params: Mapping[str, Any], key: Path) -> Any:
    """The value at `key` in nested params (a missing key: the string "<missing>")."""
    node: Any = params
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return "<missing>"
        node = node[part]
    return node


def pending(lock: Mapping[str, Any], use_case: str, params: Mapping[str, Any], changed_paths: set[str]) -> list[str]:
    """What a revision changes in `use_case` before it runs: the baseline `lock`'s inputs of the use case against
    the files git reports changed since the baseline (`changed_paths`) and the current `params`."""
    paths, old_params = inputs(lock, use_case)
    if not paths and not old_params:
        return [f"{use_case}: not in the baseline's dvc.lock"]
    found = [f"{path} changed" for path in paths
             if path in changed_paths or f"{path}.dvc" in changed_paths
             or any(changed.startswith(path.rstrip("/") + "/") for changed in changed_paths)]  # fmt: skip
    found += [f"param {'.'.join(key)} changed" for key, value in old_params.items()
              if _flat(param_at(params, key), key) != {key: value}]  # fmt: skip
    return found
