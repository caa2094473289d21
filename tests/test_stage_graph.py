"""dvc.yaml declares, for every stage, each project module the stage's code imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def imported_modules(module: str, seen: set[str] | None = None, path: Path | None = None) -> set[str]:
    """The project modules `module` (or the file `path`) imports, transitively (as file paths relative to the repo)."""
    seen = set() if seen is None else seen
    path = path or REPO / (module.replace(".", "/") + ".py")
    if not path.is_file() or str(path) in seen:
        return seen
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
FLOW_KEY = {"run": "flow", "evaluate": "eval_flow"}  # stages that execute a use case's flow code


def flow_imports(name: str) -> set[str]:
    """Project modules imported by the flow code the stage runs, in any use case (foreach shares the deps)."""
    seen: set[str] = set()
    for use_case in USE_CASES.values():
        if name in FLOW_KEY:
            for source in (REPO / use_case[FLOW_KEY[name]]).rglob("*.py"):
                imported_modules("", seen, source)
    return {path for path in seen if Path(path).is_relative_to(REPO / "stages")}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_the_code_it_runs(name: str) -> None:
    stage = STAGES[name]["do"]
    module = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
    needed = {str(Path(path).relative_to(REPO)) for path in imported_modules(module) | flow_imports(name)}
    declared = {dep for dep in stage["deps"] if dep.startswith("stages/")}
    assert needed == declared, f"{name}: missing {sorted(needed - declared)}, extra {sorted(declared - needed)}"
