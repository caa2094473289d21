"""dvc.yaml declares, for every stage, each project module the stage's code imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def imported_modules(module: str, seen: set[str] | None = None) -> set[str]:
    """The project modules `module` imports, transitively (as file paths relative to the repo)."""
    seen = set() if seen is None else seen
    path = REPO / (module.replace(".", "/") + ".py")
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


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_the_code_it_runs(name: str) -> None:
    stage = STAGES[name]["do"]
    module = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
    needed = {str(Path(path).relative_to(REPO)) for path in imported_modules(module)}
    declared = {dep for dep in stage["deps"] if dep.startswith("stages/")}
    assert needed == declared, f"{name}: missing {sorted(needed - declared)}, extra {sorted(declared - needed)}"
