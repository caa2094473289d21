"""The deployment state file `.llmops/deploy/<env>/<use_case>.json`: per target, the current and the previous
deployment (traffic split + the target's record), so `llmops rollback` can restore the previous split."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stages.core.io import read_json, write_json
from stages.core.project import RUNTIME_DIR_NAME


def path(root: Path, env: str, use_case: str) -> Path:
    return root / RUNTIME_DIR_NAME / "deploy" / env / f"{use_case}.json"


def load(root: Path, env: str, use_case: str) -> dict[str, Any]:
    file = path(root, env, use_case)
    return read_json(file) if file.is_file() else {"use_case": use_case, "env": env, "targets": {}}


def save(root: Path, state: dict[str, Any]) -> None:
    write_json(path(root, state["env"], state["use_case"]), state)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def after_deploy(state: dict[str, Any], target: str, weights: dict[str, int], record: dict[str, Any]) -> dict[str, Any]:
    """The state once `target` serves `weights`: the current entry moves to `previous` unless the split is the
    same (a repeated deploy must not make rollback a no-op)."""
    entry = state["targets"].get(target, {})
    current = entry.get("current")
    previous = entry.get("previous") if current and current["weights"] == weights else current
    targets = {**state["targets"], target: {"current": {"weights": weights, "record": record, "at": _now()},
                                            "previous": previous}}  # fmt: skip
    return {**state, "last_target": target, "targets": targets}


def after_rollback(state: dict[str, Any], target: str, record: dict[str, Any]) -> dict[str, Any]:
    """The state once the previous split is live again: current and previous swap (a second rollback undoes it)."""
    entry = state["targets"][target]
    restored = {**entry["previous"], "record": record, "at": _now()}
    targets = {**state["targets"], target: {"current": restored, "previous": entry["current"]}}
    return {**state, "targets": targets}
