"""Shared fixtures: a stub OpenAI-compatible LLM on a free port, and a throwaway copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What a fresh clone has: everything git tracks (the tests copy these, never the developer's state).
PROJECT_FILES = ("stages", "use_cases", "conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/examples-store",
                 ".dvc/.gitignore", ".gitignore", ".dvcignore", "pyproject.toml")  # fmt: skip


@dataclass
class StubLLM:
    base_url: str
    port: int
    record: Path

    def requests(self) -> list[dict]:
        import json

        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


def start_process(command: list[str], ready: re.Pattern[str], timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    """Start a server process and wait for a line matching `ready` on its stdout (returns the match)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if match := ready.search(line):
            return process, match.group(1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"{command[0]} did not become ready")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_stub(folder: Path, canned: dict[str, str] | None = None) -> Iterator[StubLLM]:
    """A stub LLM on a free port; `canned` (prompt substring -> answer) scripts answers for chosen prompts."""
    import json

    record = folder / "requests.jsonl"
    command = [sys.executable, "-m", "stages.stub_llm", "--port", "0", "--record", str(record)]
    if canned:
        (folder / "canned.json").write_text(json.dumps(canned))
        command += ["--canned", str(folder / "canned.json")]
    process, port = start_process(command, re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1"))
    try:
        yield StubLLM(base_url=f"http://127.0.0.1:{port}/v1", port=int(port), record=record)
    finally:
        stop_process(process)


@pytest.fixture
def stub_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubLLM]:
    with running_stub(tmp_path_factory.mktemp("stub")) as stub:
        yield stub


@dataclass
class Project:
    """A copy of the project in a temp folder (its own git repo) with helpers to drive it."""

    root: Path
    env: dict[str, str]

    def sh(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def repro(self) -> list[str]:
        """`dvc repro`; returns the names of the stages that ran."""
        result = self.sh("dvc", "repro")
        return re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)

    def params(self, *overrides: str) -> None:
        self.sh("llmops", "params", *overrides)

    def commit(self, message: str) -> None:
        self.sh("git", "add", "-A")
        self.sh("git", "commit", "-q", "-m", message)


def make_project(destination: Path, extra_env: dict[str, str] | None = None) -> Project:
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
        elif source.exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMOPS_", "OPENAI_", "AZURE_OPENAI_", "LOCAL_LLM_", "PF_"))
    }
    home = destination.parent / "home"  # an empty HOME: shows what the pipeline writes outside the project
    home.mkdir(exist_ok=True)
    env.update({"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", "HOME": str(home),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})  # fmt: skip
    env.update(extra_env or {})
    project = Project(root=destination, env=env)
    project.sh("git", "init", "-q", "-b", "main")
    project.sh(
        "dvc", "pull", "-q", *[str(p.relative_to(destination)) for p in destination.glob("use_cases/*/data/*.dvc")]
    )
    project.commit("initial")
    return project


def use_stub(project: Project, stub: StubLLM) -> Project:
    """Point the project's `llm=local` connection at `stub` (params recomposed and committed)."""
    config = project.root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("port: 8765", f"port: {stub.port}"))
    project.params()
    project.commit("point the local LLM at the stub")
    return project


@pytest.fixture
def project(tmp_path: Path, stub_llm: StubLLM) -> Project:
    """A project copy whose `llm=local` connection points at the stub LLM."""
    return use_stub(make_project(tmp_path / "repo"), stub_llm)
