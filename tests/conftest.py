"""Shared fixtures: a stub OpenAI-compatible LLM and Azurite on free ports, and a throwaway copy of the project."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stages.core.flow_engine import QUIET_ENV

# Before any test imports prompt flow: its tracing would otherwise ask Azure Monitor's control plane for settings.
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What a fresh clone has: everything git tracks (the tests copy these, never the developer's state).
PROJECT_FILES = ("stages", "use_cases", "conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/examples-store",
                 ".dvc/plots", ".dvc/.gitignore", ".gitignore", ".dvcignore", "pyproject.toml")  # fmt: skip


@dataclass
class StubLLM:
    base_url: str
    port: int
    record: Path
    rules: Path
    faults_file: Path

    def requests(self) -> list[dict]:
        import json

        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def script(self, rules: dict[str, str]) -> None:
        """From now on, answer any prompt containing a key of `rules` with its value (first match wins)."""
        import json

        staged = self.rules.with_suffix(".tmp")
        staged.write_text(json.dumps(rules))
        staged.replace(self.rules)

    def faults(self, **faults: object) -> None:
        """From now on, inject these faults (fields of stages.stub_llm.Faults); no arguments: none."""
        import json

        staged = self.faults_file.with_suffix(".tmp")
        staged.write_text(json.dumps(faults))
        staged.replace(self.faults_file)


def post_json(url: str, body: object, headers: dict[str, str] | None = None, timeout_s: float = 30) -> tuple:
    """POST JSON; returns (status, response headers, parsed body), also for error statuses."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                      **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def start_process(command: list[str], ready: re.Pattern[str], timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    """Start a server in its own process group; wait for a line matching `ready` on its stdout (returns the match)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert process.stdout is not None
    import time

    deadline, seen = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if match := ready.search(line):
            return process, match.group(1)
        seen.append(line)
        if process.poll() is not None:
            break
    stop_process(process)
    raise RuntimeError(f"{command[0]} did not become ready:\n{''.join(seen[-20:])}")


def stop_process(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (a launcher such as npx leaves its children behind otherwise)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left in the group
    process.wait()


@pytest.fixture
def stub_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubLLM]:
    folder = tmp_path_factory.mktemp("stub")
    record, rules, faults = folder / "requests.jsonl", folder / "rules.json", folder / "faults.json"
    command = [sys.executable, "-m", "stages.stub_llm", "--port", "0", "--record", str(record), "--rules", str(rules),
               "--faults", str(faults)]  # fmt: skip
    process, port = start_process(command, re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1"))
    try:
        yield StubLLM(f"http://127.0.0.1:{port}/v1", int(port), record=record, rules=rules, faults_file=faults)
    finally:
        stop_process(process)


# Azurite, the Azure Storage emulator, from tools/azurite (pinned; `make azurite` installs it).
AZURITE_BLOB = REPO / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (published in Azurite's README): only the tests use it.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    connection_string: str
    account_key: str

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(name)


@pytest.fixture
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's Blob service on a free port of 127.0.0.1 with a throwaway store; stopped afterwards."""
    if not AZURITE_BLOB.exists():
        pytest.fail(f"{AZURITE_BLOB} is missing: run `make azurite` (Node.js 20 + npm)")
    location = tmp_path_factory.mktemp("azurite")
    command = [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", str(location),
               "--silent", "--skipApiVersionCheck", "--disableTelemetry"]  # fmt: skip
    # --skipApiVersionCheck: azure-storage-blob sends an API version newer than Azurite 3.35 knows.
    process, port = start_process(command, re.compile(r"listens on http://127\.0\.0\.1:(\d+)"))
    try:
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        connection_string = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                             f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};")  # fmt: skip
        yield Azurite(connection_string=connection_string, account_key=AZURITE_KEY)
    finally:
        stop_process(process)


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

    def repro(self, *targets: str) -> list[str]:
        """`dvc repro` (of `targets`, default all); returns the names of the stages that ran."""
        result = self.sh("dvc", "repro", *targets)
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
    datasets = [str(p.relative_to(destination)) for p in destination.glob("use_cases/*/data/*.dvc")]
    project.sh("dvc", "pull", "-q", "-r", "examples", *datasets)
    project.commit("initial")
    return project


@pytest.fixture
def project(tmp_path: Path, stub_llm: StubLLM) -> Project:
    """A project copy whose `llm=local` connection points at the stub LLM."""
    project = make_project(tmp_path / "repo")
    config = project.root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("port: 8765", f"port: {stub_llm.port}"))
    project.params()
    project.commit("point the local LLM at the stub")
    return project
