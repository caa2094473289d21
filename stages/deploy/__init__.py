"""Deployment of a use case's variants (`llmops deploy`, `smoke`, `rollback`, `evaluate-production`).

`conf/deploy/<env>.yaml` says what to deploy (stages/deploy/spec.py); each target is a module
`stages/deploy/<target>.py` with `deploy(spec, root) -> dict` and, where it applies,
`rollback(spec, root, previous) -> dict`. What was deployed is kept in the state file (stages/deploy/state.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from stages.core.project import load_params
from stages.deploy import state
from stages.deploy.spec import TARGETS, DeploymentSpec, SpecError, load_spec


def target_module(target: str) -> ModuleType:
    """The module that implements `target` (stages/deploy/<target>.py)."""
    if target not in TARGETS:
        raise SpecError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    try:
        return importlib.import_module(f"stages.deploy.{target}")
    except ModuleNotFoundError as exc:
        if exc.name != f"stages.deploy.{target}":
            raise
        raise SpecError(f"target {target!r} is not available in this build (no stages/deploy/{target}.py)") from None


def spec_for(root: Path, use_case: str, env: str, target: str) -> DeploymentSpec:
    return load_spec(root, use_case, env, target, load_params(root))


def deploy(root: Path, use_case: str, env: str, target: str) -> dict[str, Any]:
    """Deploy with the target's module and record it in the state file; returns the target's record (with the
    traffic split it set under `weights`)."""
    spec = spec_for(root, use_case, env, target)
    record = target_module(target).deploy(spec, root)
    state.save(root, state.after_deploy(state.load(root, env, use_case), target, spec.weights, record))
    return {"weights": spec.weights, **record}


def current(root: Path, use_case: str, env: str, target: str | None = None) -> tuple[str, dict[str, Any]]:
    """The target (default: the last deployed) and its current entry {weights, record, at} from the state file."""
    known = state.load(root, env, use_case)
    target = target or known.get("last_target")
    entry = known["targets"].get(target or "", {}).get("current")
    if not target or not entry:
        where = f" to {target}" if target else ""
        raise SpecError(f"{use_case} has not been deployed{where} in env {env}: run `llmops deploy` first")
    return target, entry


def rollback(root: Path, use_case: str, env: str, target: str | None = None) -> tuple[str, dict[str, Any]]:
    """Restore the previous traffic split of the last (or the given) target; returns the target and the split."""
    target, _ = current(root, use_case, env, target)
    known = state.load(root, env, use_case)
    previous = known["targets"][target].get("previous")
    if not previous:
        raise SpecError(f"{use_case} in env {env} on {target}: no previous traffic split to restore")
    module = target_module(target)
    if not hasattr(module, "rollback"):
        raise SpecError(f"target {target!r} has no rollback")
    spec = spec_for(root, use_case, env, target)
    record = module.rollback(spec, root, {**previous["record"], "weights": previous["weights"]})
    state.save(root, state.after_rollback(known, target, record))
    return target, previous["weights"]
