"""The tests' stage fork server (tests/zygote.py) behaves as `python -m stages.<x>` would: argv, working directory,
environment, streams, exit status, signals, and a killed shim takes its stage with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stage_fork_server

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
