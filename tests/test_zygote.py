"""The tests' stage fork server (tests/zygote.py) behaves as `python -m stages.<x>` would: argv, working directory,
environment, streams, exit status, signals, and a killed shim takes its stage with it."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zygote
from conftest import fork_server_folder, stage_fork_server

PROBE = """
import json, os, signal, sys, time
mode = sys.argv[1]
if mode == "echo":
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"), "path0": sys.path[0],
                      "main": __name__, "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "promptflow")}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[2]))
if mode == "wait":
    signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(7)))
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(120)
if mode == "raise":
    raise ValueError("boom")
"""


@pytest.fixture
def probe_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    shims = stage_fork_server()
    if shims is None:
        pytest.skip("LLMOPS_TEST_ZYGOTE=0: the stages run as plain interpreters")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "probe.py").write_text(PROBE)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "PROBE": "from-the-caller"}
    return tmp_path, env


def test_a_stage_gets_its_argv_cwd_environment_streams_and_exit_status(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    result = subprocess.run(["python", "-m", "stages.probe", "echo", "3"], cwd=root, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 3, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == [str(root / "stages" / "probe.py"), "echo", "3"]
    assert (seen["cwd"], seen["path0"], seen["probe"], seen["main"]) == (str(root), str(root), "from-the-caller",
                                                                         "__main__")  # fmt: skip
    assert seen["loaded"] == []  # prompt flow is imported by the stage itself, after its environment is set
    assert result.stderr == "to stderr\n"


def test_an_uncaught_exception_is_a_traceback_and_exit_status_1(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    result = subprocess.run(["python", "-m", "stages.probe", "raise"], cwd=root, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: boom" in result.stderr


def test_other_python_commands_run_the_real_interpreter(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    result = subprocess.run(["python", "-c", "import sys; print(sys.executable)"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == sys.executable


def test_the_dvc_and_llmops_shims_run_the_console_scripts_as_forks(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    forks = fork_server_folder() / "cpu.log"  # a line per fork that ended
    before = len(forks.read_text().splitlines()) if forks.exists() else 0
    for command in (["dvc", "--help"], ["llmops", "--help"], ["llmops", "no-such-command"]):
        real = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        forked = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
        assert forked.returncode == (2 if "no-such-command" in command else 0)
    assert len(forks.read_text().splitlines()) == before + 3


def test_a_child_started_with_sys_executable_is_a_fork(probe_project: tuple) -> None:
    """What the product starts as `sys.executable -m stages.<x>` or `-m dvc` (a `pf flow build`, `dvc add`, a local
    deployment's server), from a test's process or from a fork, is a fork too (zygote.redirect_children); any other
    command stays a real interpreter."""
    root, env = probe_project
    forks = fork_server_folder() / "cpu.log"
    count = lambda: len(forks.read_text().splitlines()) if forks.exists() else 0  # noqa: E731
    before = count()
    stage = subprocess.run([sys.executable, "-m", "stages.probe", "echo", "0"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stage.returncode == 0 and json.loads(stage.stdout)["argv"][1:] == ["echo", "0"]
    dvc = subprocess.run([sys.executable, "-m", "dvc", "--help"], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert dvc.returncode == 0 and "usage: dvc" in dvc.stdout
    (root / "stages" / "deploy").mkdir()
    (root / "stages" / "deploy" / "__init__.py").write_text("")
    (root / "stages" / "deploy" / "probe.py").write_text(PROBE)
    server = subprocess.run([sys.executable, "-m", "stages.deploy.probe", "echo", "0"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert server.returncode == 0 and json.loads(server.stdout)["argv"][1:] == ["echo", "0"], server.stderr
    assert count() == before + 3
    real = subprocess.run([sys.executable, "-c", "print('real')"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert (real.returncode, real.stdout) == (0, "real\n") and count() == before + 3


def _started(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    pid_file = root / "pid"
    shim = subprocess.Popen(["python", "-m", "stages.probe", "wait", str(pid_file)], cwd=root, env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text():
            return shim, int(pid_file.read_text())
        time.sleep(0.1)
    shim.kill()
    raise AssertionError("the probe stage never started")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_signal_to_the_shim_reaches_the_stage(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    shim, stage = _started(root, env)
    assert stage != shim.pid  # the stage is the server's fork, the shim speaks for it
    shim.send_signal(signal.SIGTERM)
    out, _ = shim.communicate(timeout=60)
    assert (shim.returncode, out) == (7, "terminated\n")  # the stage's own SIGTERM handler ran


def test_killing_the_shim_outright_kills_the_stage(probe_project: tuple[Path, dict]) -> None:
    root, env = probe_project
    shim, stage = _started(root, env)
    shim.kill()
    shim.wait(timeout=60)
    for _ in range(300):
        if not _alive(stage):
            break
        time.sleep(0.1)
    assert not _alive(stage)


def test_a_shim_killed_before_it_reads_the_pid_takes_its_stage_with_it(probe_project: tuple[Path, dict]) -> None:
    """The waiter's send of the pid fails (EPIPE) or its next read does (ECONNRESET: the pid went unread): either way
    the shim is gone, and so must its stage be, or it would hold the caller's pipe open for as long as it ran (the
    stage here sleeps 120 s)."""
    root, env = probe_project
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.connect(str(fork_server_folder() / "sock"))
    read_end, write_end = os.pipe()
    request = {"argv": ["-m", "stages.probe", "wait", str(root / "pid")], "cwd": str(root), "env": env}
    zygote.hand_over(server, request, [write_end] * 3)
    os.close(write_end)
    server.close()  # before the pid comes back
    with os.fdopen(read_end, "rb") as caller_pipe:
        assert select.select([caller_pipe], [], [], 60)[0], "the stage still holds the caller's pipe"
        assert caller_pipe.read() == b""  # EOF: every writer, the stage included, is gone


def test_a_signal_to_the_shim_before_it_knows_the_stage_waits_for_the_stage(tmp_path: Path) -> None:
    """A signal between the shim's hand-over and the server's answer is held (blocked), then forwarded: it must not
    end the shim alone. A stand-in server answers only once the shim has the signal pending."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "sock"))
    listener.listen(1)
    listener.settimeout(60)  # a shim that never connects fails the test instead of hanging it
    call = f"import sys; sys.path.insert(0, {str(Path(zygote.__file__).parent)!r}); import zygote; " \
           f"zygote.shim({sys.executable!r}, {str(tmp_path / 'sock')!r}, ['-m', 'stages.anything'])"  # fmt: skip
    shim = subprocess.Popen([sys.executable, "-IS", "-c", call], stdin=subprocess.DEVNULL)
    stand_in = None
    try:
        connection, _ = listener.accept()
        connection.settimeout(60)
        _first, fds, _flags, _address = socket.recv_fds(connection, 1, 3)
        zygote._receive_line(connection)  # the whole request: the shim blocked the signals before it sent it
        for fd in fds:
            os.close(fd)
        term = 1 << (signal.SIGTERM - 1)
        assert _signals(shim.pid, "SigBlk") & term, "the shim does not hold its signals until it knows the stage"
        shim.send_signal(signal.SIGTERM)
        for _ in range(300):  # pending: the shim has it and holds it
            if _signals(shim.pid, "ShdPnd") & term:
                break
            time.sleep(0.1)
        assert shim.poll() is None and _signals(shim.pid, "ShdPnd") & term  # held, not lost or acted on
        handler = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(7)); print(flush=True)"
        stand_in = subprocess.Popen([sys.executable, "-c", f"{handler}; time.sleep(120)"], stdout=subprocess.PIPE,
                                    start_new_session=True)  # fmt: skip
        assert stand_in.stdout is not None and stand_in.stdout.readline() == b"\n"  # its handler is set
        zygote._send(connection, {"pid": stand_in.pid})
        assert stand_in.wait(timeout=60) == 7  # the held SIGTERM, forwarded to the stage's group
        zygote._send(connection, {"status": 7})
        assert shim.wait(timeout=60) == 7
    finally:
        for process in (shim, stand_in):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        listener.close()


def _signals(pid: int, field: str) -> int:
    """A signal set of the process `pid` from /proc (SigBlk: blocked; ShdPnd: pending for the process), a bit each."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:")), 16)


# The variables a stage's environment may set differently from the server's (conftest's project_env and on_stub,
# the tests' own, prompt flow's set-up in stages/engine/promptflow/environment.py): a preloaded library that kept one
# at import would keep the server's value in every stage.
DIFFERS = ("HOME", "PATH", "PYTHONPATH", "TMPDIR", "TEMP", "TMP")
DIFFERS_PREFIXES = ("LLMOPS_", "LOCAL_LLM_", "OPENAI_", "AZURE_OPENAI_", "PF_", "PROMPTFLOW_", "OTEL_",
                    "APPLICATIONINSIGHTS_", "TIKTOKEN_", "DVC_", "GIT_", "COVERAGE_")  # fmt: skip
# Reads that are harmless, and why, by the PRELOAD entry whose import reads them ("*": it walks the whole
# environment, keeping the variables of its own prefix).
HARMLESS = {
    ("openai", "HOME"): "sysconfig's user base, asked for by the first library imported: a venv has no user site",
    ("openai", "OPENAI_API_TYPE"): "a default of openai's module-level client, read at import: a stage imports openai "
    "(with prompt flow) before it points the flows' clients at its LLM, forked or not",
    ("openai", "OPENAI_API_VERSION"): "as OPENAI_API_TYPE (AzureOpenAI() reads the variable itself when made)",
    ("openai", "AZURE_OPENAI_ENDPOINT"): "as OPENAI_API_TYPE",
    ("openai", "OPENAI_LOG"): "openai's log level: no stage or test sets it",
    ("filelock", "TMPDIR"): "tempfile's folder, which the fork forgets (zygote._become_stage)",
    ("filelock", "TEMP"): "tempfile's folder, as TMPDIR",
    ("filelock", "TMP"): "tempfile's folder, as TMPDIR",
    ("opentelemetry.sdk.trace", "OTEL_PYTHON_CONTEXT"): "OpenTelemetry's context implementation: no stage or test "
    "sets it",
    ("opentelemetry.sdk.trace", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"): "no stage or test sets it",
    ("azure.monitor.opentelemetry", "OTEL_PROPAGATORS"): "OpenTelemetry's global propagators, read when "
    "opentelemetry.propagate is imported (by Azure Monitor's exporter, which prompt flow's telemetry imports): no "
    "stage or test sets it",
    ("azure.monitor.opentelemetry", "PATH"): "where platform.processor() finds `uname` (azure.identity's user agent): "
    "a stage's PATH adds only the shims' folder and the venv's bin before the system's, and neither holds a `uname`",
    ("tqdm", "*"): "tqdm.utils.envwrap keeps TQDM_* variables as tqdm's defaults: no stage or test sets one",
    ("fsspec", "*"): "fsspec.config keeps FSSPEC_* variables as its configuration: no stage or test sets one",
    ("fsspec", "HOME"): "its configuration folder, ~/.config/fsspec: there is none in the server's empty HOME "
    "(zygote.preload_environment), as in a project copy's",
    ("networkx", "*"): "networkx keeps NETWORKX_* variables as its configuration: no stage or test sets one",
    ("matplotlib.pyplot", "HOME"): "its configuration and font-cache folders and the user font folders: the server's "
    "HOME is empty (zygote.preload_environment), as a project copy's, so rcParams are matplotlib's defaults and the "
    "fonts are the system's and matplotlib's own",
    ("matplotlib.pyplot", "PATH"): "where the font manager finds `fc-list` while it builds its font cache: a stage's "
    "PATH adds only the shims' folder and the venv's bin before the system's, and neither holds an `fc-list`",
}

SPY = """
import collections.abc, importlib, json, os, sys
sys.path.insert(0, sys.argv[1])
import zygote
zygote.preload_environment(sys.argv[2])
reads, copying = [], []
class Spy(collections.abc.MutableMapping):
    def __init__(self, env): self.env = env
    def __getitem__(self, key):
        if copying and copying[0] == key:  # the next one of a walk over them all: part of the "*"
            copying.pop(0)
        else:  # a read of its own, which also ends any walk under way
            copying.clear()
            reads.append(key)
        return self.env[key]
    def __setitem__(self, key, value): reads.append(key); self.env[key] = value
    def __delitem__(self, key): reads.append(key); del self.env[key]
    def __iter__(self): reads.append("*"); copying[:] = list(self.env); return iter(list(self.env))
    def __len__(self): return len(self.env)
os.environ = Spy(os.environ)
seen = {}
for name in zygote.PRELOAD:
    reads.clear()
    copying.clear()  # a walk one import left unfinished must not hide the next one's reads
    importlib.import_module(name)
    seen[name] = sorted({key.decode() if isinstance(key, bytes) else str(key) for key in reads})
print(json.dumps(seen))
"""


def test_the_preloaded_libraries_keep_nothing_a_stage_sets_differently(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-I", "-c", SPY, str(Path(__file__).parent), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    kept = {(name, key) for name, keys in seen.items() for key in keys
            if key == "*" or key in DIFFERS or key.startswith(DIFFERS_PREFIXES)}  # fmt: skip
    assert kept - HARMLESS.keys() == set()
    assert ("filelock", "TMPDIR") in kept  # the spy sees what it should: tempfile asks while filelock is imported
