"""Shared fixtures: a stub OpenAI-compatible LLM and Azurite on free ports, and a throwaway copy of the project."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zygote

from stages.engine.promptflow.environment import QUIET_ENV

# Before any test imports prompt flow: its tracing would otherwise ask Azure Monitor's control plane for settings.
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

# Bytecode is cached, as Python does by default: a machine that sets PYTHONDONTWRITEBYTECODE (this one does) would
# otherwise compile every module of `stages` in each of the hundreds of processes the suite starts (stages, DVC,
# llmops, servers) and rewrite every test module's asserts in each worker. Popped before the workers start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# One math-library thread per process: the suite runs 3 workers on 2 cores, each with stage processes of its own,
# and the thread pools of BLAS, OpenMP and torch (a thread per core each, spinning while they wait for work) would
# oversubscribe the cores. Set before any test imports numpy; a user's own runs keep the libraries' defaults.
for _key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_key, "1")

REPO = Path(__file__).resolve().parents[1]
STUB_LLM = Path(__file__).with_name("stub_llm.py")  # the stub LLM server, run as a script
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

    def in_flight(self) -> int:
        """How many requests the stub is answering right now (e.g. held back by a `delay_s` fault)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stub/in-flight", timeout=10) as response:
            return json.loads(response.read())["in_flight"]

    def script(self, rules: dict[str, str]) -> None:
        """From now on, answer any prompt containing a key of `rules` with its value (first match wins)."""
        import json

        staged = self.rules.with_suffix(".tmp")
        staged.write_text(json.dumps(rules))
        staged.replace(self.rules)

    def faults(self, **faults: object) -> None:
        """From now on, inject these faults (fields of stub_llm.Faults); no arguments: none."""
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


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """`handler` served on 127.0.0.1, on a free port, by a thread of this process: yields the port, stops on exit
    (for a stand-in at a boundary the tests cannot reach, read by the code under test in this process)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


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


@contextlib.contextmanager
def _stub(folder: Path) -> Iterator[StubLLM]:
    folder.mkdir(parents=True, exist_ok=True)
    record, rules, faults = folder / "requests.jsonl", folder / "rules.json", folder / "faults.json"
    command = [sys.executable, str(STUB_LLM), "--port", "0", "--record", str(record), "--rules", str(rules),
               "--faults", str(faults)]  # fmt: skip
    process, port = start_process(command, re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1"))
    try:
        yield StubLLM(f"http://127.0.0.1:{port}/v1", int(port), record=record, rules=rules, faults_file=faults)
    finally:
        stop_process(process)


@pytest.fixture
def stub_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubLLM]:
    with _stub(tmp_path_factory.mktemp("stub")) as stub:
        yield stub


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
    timeout_s: float = 900  # a command still running after this is a hang (the embedded model's tests raise it)

    def sh(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True,
                                timeout=self.timeout_s)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def repro(self, *targets: str) -> list[str]:
        """`dvc repro` (of `targets`, default all); returns the names of the stages that ran."""
        result = self.sh("dvc", "repro", *targets)
        return ran_stages(result.stdout + result.stderr)

    def run_stages(self, *names: str) -> None:
        """Run these stages' commands, in this order, as `dvc repro` last ran them (from dvc.lock, read once), without
        DVC's bookkeeping: for a test about what the stages do, not about what reruns (each stage DVC runs costs a
        rewrite of dvc.lock)."""
        from stages.core.yaml_reader import load_yaml

        stages = load_yaml((self.root / "dvc.lock").read_text())["stages"]
        for name in names:
            self.sh("sh", "-c", stages[name]["cmd"])

    def params(self, *overrides: str) -> None:
        """What `llmops params [overrides]` does, in this process (a subprocess would import DVC and Hydra anew)."""
        from stages.cli import compose_params

        compose_params(self.root, list(overrides), self.root / "params.yaml")

    def only(self, *use_cases: str, overrides: tuple[str, ...] = ()) -> None:
        """Compose params.yaml with these use cases only: `dvc repro` then sees the smallest graph that shows a
        property (their stages, and the documents' stages, which read chat_with_pdf's params). The stages of the
        use cases kept stay up to date: each reads its own use case's params. dvc.lock keeps their entries only, as
        in a project with that catalogue: DVC rewrites the whole lock after each stage it runs (a ruamel round trip:
        0.96 CPU-s at the whole catalogue's 108 KB, 0.32 s at two use cases' 36 KB: docs/test-suite.md)."""
        kept = dict.fromkeys([*use_cases, "chat_with_pdf"])
        self.params(f"use_cases=[{','.join(kept)}]", *overrides)
        keep_lock_entries(self.root / "dvc.lock", set(kept))

    def commit(self, message: str) -> None:
        self.sh("git", "add", "-A")
        self.sh("git", "commit", "-q", "-m", message)


def keep_lock_entries(lock: Path, use_cases: set[str]) -> None:
    """Drop from `lock` the entries of `<stage>@<use case>` for use cases not in `use_cases`. Cut as text, so what
    stays is byte for byte what DVC wrote: a stage's entry is its name's line (two spaces in) and the lines under it."""
    if not lock.is_file():
        return
    kept, keep = [], True
    for line in lock.read_text().splitlines(keepends=True):
        if not line.startswith(" "):
            keep = True
        elif not line.startswith("   "):  # a stage's name
            name = line.strip().removesuffix(":")
            keep = "@" not in name or name.split("@", 1)[1] in use_cases
        if keep:
            kept.append(line)
    lock.write_text("".join(kept))


# The code stages (dvc.yaml: each kind's manifest of the modules it runs): a fresh clone's first `dvc repro` of any
# use case runs them first.
CODE_STAGES = {"code_prepare", "code_run", "code_evaluate", "code_report"}


def ran_stages(console: str) -> list[str]:
    """The stages a `dvc repro` or `dvc exp run` ran, in order, read off what it printed."""
    return re.findall(r"Running stage '([^']+)'", console)


def make_project(destination: Path, extra_env: dict[str, str] | None = None) -> Project:
    """A fresh clone's state in `destination`: the tracked files, a git repo with one commit, the datasets pulled."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
        elif source.exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    project = Project(root=destination, env=project_env(destination, extra_env))
    project.sh("git", "init", "-q", "-b", "main")
    datasets = [str(p.relative_to(destination)) for p in destination.glob("use_cases/*/data/*.dvc")]
    project.sh("dvc", "pull", "-q", "-r", "examples", *datasets)
    project.commit("initial")
    return project


@functools.cache
def scratch_tmp() -> Path:
    """TMPDIR of the processes tests start, removed when this worker ends: what they leave in the temp folder (prompt
    flow's Azure Monitor exporter makes a folder per working directory, Chromium its profile) stays out of /tmp. Kept
    short: Unix socket paths under it are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="llmops-t-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _shim_python() -> str | None:
    return str(folder / "python") if (folder := stage_fork_server()) else None


# Product code the tests call in-process starts its stage-like children (`sys.executable -m stages.<x>`, `-m dvc`)
# as forks of this worker's server too, as `dvc repro` does its stages (started on first use).
zygote.redirect_children(sys.executable, _shim_python)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # A worker's own temp folder too: what its tests start without project_env (stage worker processes, probes,
    # servers) and what they import in-process (prompt flow) write there, not into /tmp. Workers only: the
    # controller's temp folder holds the session's basetemp, kept after the run for a look at a failure.
    os.environ["TMPDIR"] = str(scratch_tmp())
    tempfile.tempdir = None  # recomputed from TMPDIR on next use


def fork_server_folder() -> Path:
    """Where this worker's stage fork server keeps its socket (sock), shims (bin/) and the CPU log of its forks."""
    return scratch_tmp() / "zygote"


@functools.cache
def stage_fork_server() -> Path | None:
    """The folder of the shims (`python`, `dvc`, `llmops`) that run this worker's stage processes and project commands
    as forks of one server (tests/zygote.py says what is shared and why), or None with LLMOPS_TEST_ZYGOTE=0. Started
    on first use, stopped at exit."""
    if os.environ.get("LLMOPS_TEST_ZYGOTE", "1") == "0":
        return None
    folder = fork_server_folder()
    folder.mkdir()
    socket_path, module = folder / "sock", Path(__file__).with_name("zygote.py")
    (folder / "bin").mkdir()
    head = f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(module.parent)!r})\nimport zygote\n"
    calls = {"python": f"zygote.shim({sys.executable!r}, {str(socket_path)!r}, sys.argv[1:])\n"}
    for script in ("dvc", "llmops"):  # console scripts: their (third-party) imports are the server's too
        calls[script] = f"zygote.script_shim({str(VENV_BIN / script)!r}, {str(socket_path)!r}, sys.argv[1:])\n"
    for name, call in calls.items():
        shim = folder / "bin" / name
        shim.write_text(head + call)
        shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}  # no coverage in it
    env["LLMOPS_ZYGOTE_CPU_LOG"] = str(folder / "cpu.log")
    command = [sys.executable, str(module), "serve", str(socket_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=folder, start_new_session=True)  # fmt: skip
    assert process.stdout is not None
    ready = process.stdout.readline()
    if "zygote ready" not in ready:
        stop_process(process)
        raise RuntimeError(f"the stage fork server did not start: {ready}{process.stdout.read()}")
    atexit.register(stop_process, process)
    return folder / "bin"


def project_env(root: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a project copy: none of the developer's LLM settings, an empty HOME of its own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMOPS_", "OPENAI_", "AZURE_OPENAI_", "LOCAL_LLM_", "PF_"))
    }
    home = root.parent / "home"  # an empty HOME: shows what the pipeline writes outside the project
    home.mkdir(exist_ok=True)
    shims = [str(folder)] if (folder := stage_fork_server()) else []
    path = os.pathsep.join([*shims, str(VENV_BIN), env.get("PATH", "")])
    env.update({"PATH": path, "HOME": str(home),  # DVC's usage reports are off in .dvc/config
                "TMPDIR": str(scratch_tmp()),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})  # fmt: skip
    env.update(extra_env or {})
    return env


def without_fork_server(env: dict[str, str]) -> dict[str, str]:
    """`env` with real interpreters for `python`, `dvc` and `llmops` (the fork server's shims off PATH), for a test
    that kills a command outright: a process group killed at once dies at once, while a fork outlives its killed
    shim until the server's waiter, woken by the closed socket, kills it (tests/zygote.py), long enough on a busy
    machine to finish what it was writing."""
    shims = str(folder) if (folder := stage_fork_server()) else None
    return {**env, "PATH": os.pathsep.join(entry for entry in env["PATH"].split(os.pathsep) if entry != shims)}


# Folders of a built project whose files are never rewritten in place, only added or removed: content-addressed
# stores (DVC's cache, git's objects) and the packages of the Agent Framework's virtual environment (3,600 files, half
# of the reproduced project's; installers replace a package's files, and the venv's stamps, which are rewritten, lie
# outside lib/). A copy hard-links their files instead of copying them: measured, 1.5-2 of the 3-4.5 CPU-s of each
# copy of the reproduced project.
WRITTEN_ONCE = (".dvc/cache", ".git/objects", ".llmops/maf/venv/lib")


def copy_project(template: Path, destination: Path, extra_env: dict[str, str] | None = None) -> Project:
    """A copy of a built project (git history, DVC cache and outputs included): nothing is recomputed."""
    shared = tuple(f"{template / folder}{os.sep}" for folder in WRITTEN_ONCE)

    def scratch(folder: str, names: list[str]) -> set[str]:  # DVC's locks and state of the template's own path
        return {"tmp"} & set(names) if Path(folder).name == ".dvc" else set()

    def link_or_copy(source: str, target: str) -> str:
        if source.startswith(shared):
            with contextlib.suppress(OSError):  # another file system: copied
                os.link(source, target)
                return target
        return shutil.copy2(source, target)

    shutil.copytree(template, destination, symlinks=True, ignore=scratch, copy_function=link_or_copy)
    return Project(root=destination, env=project_env(destination, extra_env))


def on_stub(stub: StubLLM) -> dict[str, str]:
    """The environment that points `llm=local` (and the judge) at the stub: no params change, no stage reruns."""
    return {"LOCAL_LLM_BASE_URL": stub.base_url}


def _shared_dir(factory: pytest.TempPathFactory) -> Path:
    """The session's temp folder that every xdist worker sees (a worker's own is a subfolder of it)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _built_once(shared: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test session, shared by the xdist workers (the first to ask builds, under a lock)."""
    from filelock import FileLock

    folder, done = shared / f"built-{name}", shared / f"built-{name}.done"
    with FileLock(str(shared / f"built-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def fresh_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone's state, made once per session: `project` copies it."""
    return _built_once(_shared_dir(tmp_path_factory), "fresh", lambda folder: make_project(folder / "repo")) / "repo"


@pytest.fixture
def project(tmp_path: Path, stub_llm: StubLLM, fresh_template: Path) -> Project:
    """A copy of a fresh clone (nothing reproduced yet) whose `llm=local` connection is the stub LLM."""
    return copy_project(fresh_template, tmp_path / "repo", on_stub(stub_llm))


# Scripted answers of the code use cases (stub rules: the first key found in a prompt gives the answer).
CANNED_CODE = {
    "Question: A baker makes 12 muffins": "muffins = 12 * 7\nprint(muffins)",
    "Question: What is 15% of 240?": "print(240 * 15 / 100)",
    "Question: What is 2 to the power of 12?": "print(2 ** 10)",  # runs, wrong answer
    "Question: How many seconds are there in 2.5 hours?": "import os\nos.system('echo hi')",  # refused: error
    "# Task: Return the sum of two numbers.": "    return a + b\n",
    "# Task: Return the square of a number.": "    return x * x\n",
    "# Task: Return True if the integer n is even": "    return n == 4\n",  # passes 2 of 3 tests
    "# Task: Return the n-th Fibonacci number": "    return 0\nimport os\nos._exit(3)\n",  # the harness crashes
}


def reproduced_rules(root: Path) -> dict[str, str]:
    """The answers the session's project is reproduced with, beside the stub's defaults (tests/stub_llm.py); each
    rule reaches one use case's prompts only, so the tests of each use case read their outcome off the one run:
    - chat's judges: relevance 3 (but an unreadable verdict for the stub's "banana" answers), coherence 4, fluency
      5 for "banana" and 2 otherwise;
    - chat_with_pdf: its groundedness judge answers 4, except on the first question's row, where every prompt
      (rewrite, answer, judge) gets an answer that holds no score;
    - math_coding and code_generation: CANNED_CODE."""
    import json

    questions = root / "use_cases" / "chat_with_pdf" / "data" / "questions.jsonl"
    first = json.loads(questions.read_text().splitlines()[0])["question"]
    chat = {"Answer: banana\nRelevance:": "no idea", "\nRelevance:": "3", "\nCoherence:": "4",
            "Answer: banana\nFluency:": "5", "\nFluency:": "2"}  # fmt: skip
    return {**CANNED_CODE, first: "great", "Rate how well each answer is supported": "4", **chat}


@dataclass
class Reproduced:
    """The whole catalogue reproduced once on the stub LLM, with a canary key in `.env` (read only: copy it)."""

    root: Path
    ran: list[str]  # the stages `dvc repro` ran, in order
    console: str  # what `dvc repro` printed (stdout and stderr)
    requests: list[dict]  # what the stub received
    canary: str  # LOCAL_LLM_API_KEY in .env during the run


def _reproduce(folder: Path) -> None:
    import json
    import uuid

    project = make_project(folder / "repo")
    canary = f"canary-{uuid.uuid4().hex}"
    (project.root / ".env").write_text(f"LOCAL_LLM_API_KEY={canary}\n")
    with _stub(folder / "stub") as stub:
        stub.script(reproduced_rules(project.root))
        project.env.update(on_stub(stub))
        result = project.sh("dvc", "repro")
        requests = stub.requests()
    project.commit("reproduced on the stub LLM")
    console = result.stdout + result.stderr
    build = {"ran": ran_stages(console), "console": console, "requests": requests,
             "canary": canary}  # fmt: skip
    (folder / "build.json").write_text(json.dumps(build))


@pytest.fixture(scope="session")
def reproduced_build(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    import json

    folder = _built_once(_shared_dir(tmp_path_factory), "reproduced", _reproduce)
    return Reproduced(root=folder / "repo", **json.loads((folder / "build.json").read_text()))


@pytest.fixture
def reproduced(tmp_path: Path, stub_llm: StubLLM, reproduced_build: Reproduced) -> Project:
    """A copy of the reproduced project (every stage up to date, its LLM cache filled, committed) on the stub LLM:
    a test reruns only the stages it is about."""
    return copy_project(reproduced_build.root, tmp_path / "repo", on_stub(stub_llm))


# The reproduced project takes minutes to build: a session that needs it starts building it in the background as
# soon as its tests are collected (the workers run other tests meanwhile), and runs the tests that use it last.
REPRODUCED_FIXTURES = {"reproduced", "reproduced_build"}


@pytest.hookimpl(trylast=True)  # after `-m` and `-k` deselected theirs: a run of the slow tier alone builds nothing
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The embedded model's tests take minutes each: they start first, so that no worker ends on one alone. xdist
    # deals the first tests in consecutive chunks, so one worker runs them one after the other (never two llama.cpp
    # servers at once) while the others take the fast tests. Stable sort: file order otherwise.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    needs = [item for item in items if REPRODUCED_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if not needs or config.option.collectonly:
        return
    # Longest first among them (marker `pipeline`: reruns much of the graph), so no worker ends on a long one alone.
    needs.sort(key=lambda item: item.get_closest_marker("pipeline") is None)
    items[:] = [item for item in items if item not in needs] + needs
    _start_background_build(_shared_dir(config._tmp_path_factory))  # type: ignore[attr-defined]


def _start_background_build(shared: Path) -> None:
    from filelock import FileLock

    with FileLock(str(shared / "built-reproduced.spawn.lock")):
        pid_file = shared / "built-reproduced.pid"
        if pid_file.exists() or (shared / "built-reproduced.done").exists():
            return  # another worker started it
        log = (shared / "built-reproduced.log").open("w")
        process = subprocess.Popen([sys.executable, __file__, "reproduce", str(shared)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)  # fmt: skip
        pid_file.write_text(str(process.pid))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or a run without workers) stops a background build still going (e.g. on Ctrl-C)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    shared = _shared_dir(session.config._tmp_path_factory)  # type: ignore[attr-defined]
    pid_file = shared / "built-reproduced.pid"
    if pid_file.exists() and not (shared / "built-reproduced.exited").exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


if __name__ == "__main__" and sys.argv[1:2] == ["reproduce"]:
    # The background build: SIGTERM unwinds (stopping its stub LLM) instead of killing outright.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if os.fork():  # the worker's child ends at once: the build's CPU is not counted as a test's (LLMOPS_TEST_CPU)
        os._exit(0)  # the build goes on in the same process group, which pytest_sessionfinish signals
    try:
        _built_once(Path(sys.argv[2]), "reproduced", _reproduce)
    finally:
        (Path(sys.argv[2]) / "built-reproduced.exited").touch()  # its pid may be reused from now on


@pytest.fixture(autouse=True)
def _log_handlers_outlive_capsys() -> Iterator[None]:
    """A logger first made during a test that captures with capsys (prompt flow makes its loggers on first use, each
    with a StreamHandler of the sys.stdout/sys.stderr of that moment) keeps writing to that test's stream once it is
    closed: in a later test of the same worker, a failing row's log line raised "I/O operation on closed file" and
    the row's error became that. After each test such handlers write to the session's sys.stderr."""
    yield
    import logging

    from stages.core.redaction import all_loggers

    for logger in all_loggers():
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
                with handler.lock or contextlib.nullcontext():  # not setStream: it flushes the closed stream
                    handler.stream = sys.stderr


# LLMOPS_TEST_CPU=<file>: each test's CPU seconds (this worker's and its waited-for children's: stage processes, DVC,
# servers it stopped), appended as JSON lines. Unlike wall time, CPU time barely moves on a busy machine: the way to
# see what a test costs while other work runs (make test prints the 25 slowest by wall time).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    target = os.environ.get("LLMOPS_TEST_CPU")
    if not target:
        yield
        return
    import json
    import resource
    import time

    def cpu() -> tuple[float, float]:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        forked = fork_server_folder() / "cpu.log"  # the stage processes forked by the server (not our children)
        stages = sum(map(float, forked.read_text().split())) if forked.exists() else 0.0
        return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime + stages

    (own0, children0), wall0 = cpu(), time.monotonic()
    yield
    (own1, children1), wall1 = cpu(), time.monotonic()
    record = {"test": item.nodeid, "own_s": round(own1 - own0, 2), "children_s": round(children1 - children0, 2),
              "wall_s": round(wall1 - wall0, 2), "worker": os.environ.get("PYTEST_XDIST_WORKER", "")}  # fmt: skip
    with open(target, "a") as out:
        out.write(json.dumps(record) + "\n")
