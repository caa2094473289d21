"""The sandbox's guarantees, each tried for real: the code attempts the thing and must be stopped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.core.sandbox import extract_code, network_namespace, run_python


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP server on 127.0.0.1 (accepting connections) for the code to reach."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_runs_code_and_captures_output() -> None:
    result = run_python("import sys, math\nprint(math.factorial(5))\nprint(sys.stdin.read().upper())", stdin="hi")
    assert (result.status, result.returncode, result.stdout, result.error) == ("ok", 0, "120\nHI\n", None)


def test_a_crash_is_an_error_with_stderr() -> None:
    result = run_python("def f():\n    return 1 / 0\nf()")
    assert result.status == "error" and result.returncode == 1
    assert (
        "ZeroDivisionError: division by zero" in result.stderr and result.error == "ZeroDivisionError: division by zero"
    )
    assert run_python("print(").status == "error"  # a syntax error too


def test_files_only_inside_its_own_temp_folder(tmp_path: Path) -> None:
    inside = run_python("open('notes.txt', 'w').write('x')\nimport os\nprint(sorted(os.listdir('.')), os.getcwd())")
    assert inside.status == "ok" and "['main.py', 'notes.txt']" in inside.stdout
    assert "llmops-sandbox-" in inside.stdout and str(tmp_path) not in inside.stdout  # a fresh folder

    target = tmp_path / "written.txt"
    write = run_python(f"open({str(target)!r}, 'w').write('pwned')")
    assert write.status == "error" and "PermissionError" in write.error and not target.exists()
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    read = run_python(f"print(open({str(secret)!r}).read())")
    assert read.status == "error" and "s3cret" not in read.stdout
    listing = run_python(f"import os\nprint(os.listdir({str(tmp_path)!r}))")
    assert listing.status == "error" and "secret" not in listing.stdout
    escape = run_python(f"import os\nos.symlink({str(secret)!r}, 'link')\nprint(open('link').read())")
    assert escape.status == "error" and "s3cret" not in escape.stdout
    remove = run_python(f"import os\nos.remove({str(secret)!r})")
    assert remove.status == "error" and secret.exists()


def test_no_network(listener: int) -> None:
    result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=2)\nprint('in')")
    assert result.status == "error" and "in" not in result.stdout and "not allowed" in result.error


@pytest.mark.skipif(not network_namespace(), reason="no user + network namespaces on this machine")
def test_the_network_namespace_alone_blocks_loopback(listener: int) -> None:
    """The second fence on its own (without the audit hook): the same command prefix the sandbox uses."""
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=2)"
    unshared = subprocess.run([shutil.which("unshare"), "-rn", sys.executable, "-c", code], capture_output=True)
    assert unshared.returncode != 0 and b"Network is unreachable" in unshared.stderr
    direct = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert direct.returncode == 0  # the listener is really there


def test_no_processes_or_ctypes() -> None:
    for code in ("import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                 "import os\nwhile True:\n    os.fork()", "import os\nos.execv('/bin/true', ['true'])",
                 "import os\nos.kill(os.getppid(), 9)", "import ctypes"):  # fmt: skip
        result = run_python(code)
        assert result.status == "error" and "not allowed" in result.error, code


def test_an_endless_loop_times_out_and_leaves_nothing_running() -> None:
    result = run_python("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    pass", timeout_s=1)
    assert result.status == "timeout" and result.returncode is None
    assert 1 <= result.duration_s < 5 and result.error.startswith("timed out")
    with pytest.raises(ProcessLookupError):  # the whole process group was killed and reaped
        os.kill(int(result.stdout), 0)


def test_memory_and_output_are_limited() -> None:
    hog = run_python("blocks = [bytearray(50 * 1024 * 1024) for _ in range(40)]", memory_mb=256)
    assert hog.status == "error" and "MemoryError" in hog.error
    flood = run_python("while True:\n    print('x' * 1000)", max_output_bytes=10_000)
    assert flood.status == "error" and len(flood.stdout) <= 10_000


def test_an_empty_environment() -> None:
    os.environ["LLMOPS_SANDBOX_CANARY"] = "leak"
    try:
        result = run_python("import os\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'))")
    finally:
        del os.environ["LLMOPS_SANDBOX_CANARY"]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "answer,code",
    [("```python\nx = 1\nprint(x)\n```\nThat prints 1.", "x = 1\nprint(x)"), ("print(2)\n", "print(2)"),
     ("Here:\n```\nprint(3)", "print(3)"), ("", "")],
)  # fmt: skip
def test_extract_code(answer: str, code: str) -> None:
    assert extract_code(answer) == code
