"""The import rules of docs/architecture.md hold: the import-linter contracts of pyproject.toml, and prompt flow is
imported only when a flow loads (a stage that runs no prompt flow flow never pays for importing it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "BROKEN" not in done.stdout


def test_importing_the_stages_does_not_import_prompt_flow() -> None:
    code = (
        "import sys\n"
        "import stages.run, stages.evaluate, stages.report, stages.prepare, stages.cli\n"
        "from stages import engine\n"
        "engine.FlowSession, engine.detect\n"
        "print(sorted(m for m in sys.modules if m == 'promptflow' or m.startswith('promptflow.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_gate_reads_an_envs_thresholds_from_the_params_conf_composes_for_it() -> None:
    import pytest
    import yaml

    from stages import cli
    from stages.results.gate import GateConfigError

    composed = cli.env_params(REPO, "pr", GateConfigError)["env"]
    assert composed["name"] == "pr"
    assert composed["gate"] == yaml.safe_load((REPO / "conf" / "env" / "pr.yaml").read_text())["gate"]
    with pytest.raises(GateConfigError, match=r"conf/env/nope\.yaml: no such env"):
        cli.env_params(REPO, "nope", GateConfigError)


def test_the_product_package_holds_and_imports_no_test_code() -> None:
    import ast

    imported = set()
    for path in (REPO / "stages").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {(path.name, alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add((path.name, node.module.split(".")[0]))
    assert not {(name, module) for name, module in imported if module in {"stub_llm", "tests", "conftest"}}
    assert not list((REPO / "stages").rglob("stub_llm.py"))  # the stub LLM is test code: tests/stub_llm.py
