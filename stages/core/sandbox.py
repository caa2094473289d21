"""Run untrusted Python (code an LLM wrote) in a separate, fenced-in process.

Each call starts a fresh `python -I -S -B` in a new empty temp folder (its cwd) with an empty environment,
in its own process group (killed as a whole on timeout, so nothing is left behind). The fences:

- **resource limits**, set by the child's bootstrap before the code runs: address space (`memory_mb`), CPU
  seconds, open files, size of any file written (stdout and stderr included), no core dumps;
- **no network**: a new, empty network namespace (`unshare -rn`) when the machine allows it
  (`network_namespace()`), and always the audit hook below;
- **an audit hook** (PEP 578), installed by the bootstrap before the code runs, that refuses: sockets,
  subprocesses, fork/exec/spawn/system, signals to other processes, ctypes, gc introspection, links, writes
  (and deletes, renames, mkdir, chmod) outside the temp folder, and reads outside the temp folder except the
  interpreter's own standard library.

Audit hooks are not a security boundary against a determined attacker (PEP 578 says so); with the resource
limits and the namespace they keep a model's mistakes and mischief (loops, memory hogs, file writes, network
calls, fork bombs) from touching the machine. A crash, a refused operation or a timeout is a result, never an
exception.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "error", "timeout"]

# Runs in the child before the untrusted code: limits, then the audit hook, then main.py in fresh globals.
# argv: memory_mb cpu_s max_file_bytes
_BOOTSTRAP = r"""
import os, resource, sys
def _fence(memory_mb, cpu_s, max_file_bytes):
    for limit, value in ((resource.RLIMIT_AS, memory_mb * 1024 * 1024), (resource.RLIMIT_CPU, cpu_s),
                         (resource.RLIMIT_NOFILE, 32), (resource.RLIMIT_FSIZE, max_file_bytes),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    home = os.path.realpath(os.getcwd())
    readable = tuple(os.path.realpath(p) for p in sys.path if p) + (home, "/dev/null", "/dev/urandom")
    denied = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
              "os.system", "os.kill", "os.killpg", "os.link", "os.symlink", "os.startfile", "ctypes.",
              "gc.get_", "pty.", "resource.setrlimit", "resource.prlimit", "sys.remote_exec")
    modules = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters"})
    changes = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                         "os.utime", "os.chflags", "os.setxattr", "os.removexattr", "shutil.rmtree"})
    listings = frozenset({"os.listdir", "os.scandir", "glob.glob", "os.chdir"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path, roots):
        if isinstance(path, int):
            return True  # an already open descriptor
        real = os.path.realpath(os.fsdecode(path))
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (mode and any(c in mode for c in "wax+")) or (mode is None and flags & write_flags)
            if path is not None and not inside(path, (home,) if writes else readable):
                raise PermissionError(f"sandbox: {'writing' if writes else 'reading'} {path} is not allowed")
        elif event == "import" and args[0] in modules:
            raise ImportError(f"sandbox: import {args[0]} is not allowed")
        elif event in changes:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path, (home,)):
                    raise PermissionError(f"sandbox: {event} on {path} is not allowed")
        elif event in listings:
            if args and args[0] is not None and not inside(args[0], readable):
                raise PermissionError(f"sandbox: {event} of {args[0]} is not allowed")
        elif event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)
_limits = [int(value) for value in sys.argv[1:4]]
with open("main.py", encoding="utf-8") as _handle:
    _code = compile(_handle.read(), "main.py", "exec")
sys.argv = ["main.py"]
_fence(*_limits)
del _fence, _limits, _handle
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxResult:
    status: Status  # ok: exit code 0; error: any other exit (exception, refused operation, limit); timeout
    stdout: str
    stderr: str
    returncode: int | None  # None on timeout; negative: killed by that signal
    duration_s: float

    @property
    def error(self) -> str | None:
        """A one-line reason for a non-ok result (the exception line of stderr, the signal, or the timeout)."""
        if self.status == "ok":
            return None
        if self.status == "timeout":
            return f"timed out after {self.duration_s:.1f} s"
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
        if self.returncode is not None and self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit code {self.returncode}"


@functools.cache
def network_namespace() -> bool:
    """Whether `unshare -rn` (a user + network namespace: no interfaces but a down loopback) works here."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    try:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10, env={})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _read(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _exited(pid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the child to exit, without reaping it (WNOWAIT): until it is reaped, its pid
    and process group id cannot be reused, so killing the group afterwards cannot hit an unrelated process."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_python(
    code: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 256, max_output_bytes: int = 64_000
) -> SandboxResult:
    """Run `code` as `main.py` in a fresh sandboxed interpreter and return what happened (never raises on
    the code's behaviour). Output beyond `max_output_bytes` per stream is cut (the child dies writing it)."""
    command = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP]
    command += [str(memory_mb), str(math.ceil(timeout_s) + 1), str(max_output_bytes)]
    if network_namespace():
        command = [shutil.which("unshare") or "unshare", "-rn", *command]
    with tempfile.TemporaryDirectory(prefix="llmops-sandbox-") as scratch:
        home = Path(scratch) / "home"  # the child's cwd; its output files live beside it, out of reach
        home.mkdir()
        (home / "main.py").write_text(code, encoding="utf-8")
        (Path(scratch) / "stdin").write_text(stdin, encoding="utf-8")
        out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
        started = time.perf_counter()
        with (Path(scratch) / "stdin").open("rb") as stdin_file, out.open("wb") as out_file, err.open("wb") as err_file:
            process = subprocess.Popen(command, cwd=home, env={}, stdin=stdin_file, stdout=out_file,
                                       stderr=err_file, start_new_session=True)  # fmt: skip
            try:
                exited = _exited(process.pid, timeout_s)
            finally:
                _kill_group(process)  # also whatever it left running; its pid is not reaped yet, so still ours
                returncode: int | None = process.wait()
        status: Status = "timeout" if not exited else "ok" if returncode == 0 else "error"
        returncode = returncode if exited else None
        duration = time.perf_counter() - started
        return SandboxResult(status, _read(out, max_output_bytes), _read(err, max_output_bytes), returncode, duration)


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The Python in an LLM's answer: the first ``` fenced block if there is one, else the text itself."""
    match = _FENCE.search(text or "")
    return (match.group(1) if match else text or "").strip("\n")
