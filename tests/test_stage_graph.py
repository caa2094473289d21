"""dvc.yaml declares, for every stage, each project module the stage's code imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def imported_modules(module: str, seen: set[str] | None = None, path: Path | None = None) -> set[str]:
    """The project modules `module` (or the script at `path`) imports, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = path or REPO / (module.replace(".", "/") + ".py")
    if not path.is_file() or str(path) in seen:
        return seen
    if path.is_relative_to(REPO / "stages"):
        seen.add(str(path))
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("stages")]
        for name in names:
            imported_modules(name, seen)
    return seen


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
USE_CASES = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"]
# Stages that execute flows also run the flows' python code, which may import the metrics library.
FLOW_KEY = {"run": "flow", "evaluate": "eval_flow"}


def dag_sources(flow: Path) -> list[Path]:
    """The files a DAG flow's nodes use (`source.path`): a node may use a shared file outside the flow folder."""
    spec = flow / "flow.dag.yaml"
    nodes = (yaml.safe_load(spec.read_text()).get("nodes") or []) if spec.is_file() else []
    return [(flow / node["source"]["path"]).resolve() for node in nodes if node["source"].get("type") == "code"]


def flow_code(flow_key: str) -> set[str]:
    """Project files the `flow_key` flows use: what their python imports, and the package files their nodes use
    (the shared verdict node, rubric prompts)."""
    seen: set[str] = set()
    for use_case in USE_CASES.values():
        flow = REPO / use_case[flow_key]
        scripts = set(flow.rglob("*.py"))
        for source in dag_sources(flow):
            if source.suffix == ".py":
                scripts.add(source)
            elif source.is_relative_to(REPO / "stages"):
                seen.add(str(source))
        for script in sorted(scripts):
            imported_modules("", seen, path=script)
    return seen


def covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_the_code_it_runs(name: str) -> None:
    stage = STAGES[name].get("do", STAGES[name])  # a foreach stage, or a single stage
    module = re.search(r"python -m (stages[\w.]+)", stage["cmd"]).group(1)
    needed = imported_modules(module) | (flow_code(FLOW_KEY[name]) if name in FLOW_KEY else set())
    needed = {str(Path(path).relative_to(REPO)) for path in needed}
    declared = {dep for dep in stage["deps"] if dep.startswith("stages/")}
    missing = {path for path in needed if not covered(path, declared)}
    extra = {dep for dep in declared if not any(covered(path, {dep}) for path in needed)}
    assert not missing and not extra, f"{name}: missing {sorted(missing)}, extra {sorted(extra)}"
