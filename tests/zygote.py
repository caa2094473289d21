"""A test-only fork server for the stage processes (`python -m stages.<stage> ...`) that `dvc repro` starts in the
tests' project copies, and for the `dvc` and `llmops` commands the tests run there.

Each stage is a fresh interpreter that imports prompt flow's dependencies (openai's types, SQLAlchemy, pandas, scipy,
...) before its first row: 1.5-2 CPU-seconds each time, most of the CPU of a test that reruns a few stages. The
suite starts some hundreds of them. Here one server per pytest worker imports those third-party libraries once, and
a stage process is a fork of it: the `python` shim first on a project copy's PATH hands its argv, working directory,
environment and standard streams over a Unix socket, and exits with the stage's exit status (signals it receives
are passed on; if it is killed outright, the stage is killed too). What the product itself starts as
`sys.executable -m stages.<x>` or `-m dvc` (`pf flow build`'s child, `dvc add`), from a test's process or from a fork,
goes through the same shim (`redirect_children`).

What the fork does not share with a real `python -m`: only the import of third-party libraries that keep, from the
environment at import, nothing a stage sets differently (test_zygote.py checks each). Prompt flow itself, the
project's `stages` package and everything else is imported afresh in each stage process, after it has set up its
environment (stages/engine/promptflow/environment.py points prompt flow at a project-local home *before* importing
it). `LLMOPS_TEST_ZYGOTE=0` turns the server off: stages run as plain interpreters.

Standard library only: the shim and the server import nothing of the project.
"""

from __future__ import annotations

import array
import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable

# Imported once by the server: the third-party libraries a stage imports before its first row, prompt flow's own
# dependencies included (cryptography, aiohttp, azure.core, ...: 0.3 CPU-s of each run or evaluate stage). None reads
# an environment variable at import that a stage's environment sets differently, bar those test_zygote.py allows
# with the reason (it imports each in a fresh interpreter and records what it reads).
PRELOAD = (
    "openai", "openai.types", "httpx", "pydantic", "sqlalchemy", "sqlalchemy.orm", "numpy", "pandas", "scipy.stats",
    "jinja2", "yaml", "jsonschema", "flask", "marshmallow", "psutil", "requests", "ruamel.yaml", "filelock",
    "opentelemetry.sdk.trace", "opentelemetry.sdk.trace.export", "opentelemetry.sdk.metrics", "opentelemetry.sdk._logs",
    "cryptography.x509", "cryptography.hazmat.primitives.hashes", "cryptography.hazmat.bindings.openssl.binding",
    "dateutil.parser", "dateutil.tz", "aiohttp", "rich.console", "click", "pygments", "tabulate", "httpx2", "httpcore2",
    "werkzeug", "pydash", "oauthlib.oauth2", "requests_oauthlib", "google.protobuf", "strictyaml", "packaging.version",
    "packaging.requirements", "flask_restx", "msal", "msrest", "docstring_parser", "multiprocessing.pool", "filetype",
    "aniso8601", "dotenv", "isodate", "azure.core.pipeline.policies", "azure.core.pipeline.transport", "colorama",
    # prompt flow's telemetry exporter and the chat parts of openai: 0.12-0.15 CPU-s of each run or evaluate stage
    "azure.monitor.opentelemetry", "opentelemetry.instrumentation.instrumentor", "openai.lib.streaming.chat",
    "openai.resources.chat.completions.messages", "openai.pagination", "google.protobuf.json_format",
    "google.protobuf.message_factory", "keyring", "wrapt",
    # DVC's and llmops' own (networkx, fsspec and tqdm: 0.3-0.35 CPU-s of each `dvc` command, measured; not dulwich:
    # 0.04 CPU-s, and dulwich.porcelain keeps paths under HOME at import)
    "pyparsing", "attr", "pathspec", "voluptuous", "funcy", "pygtrie", "sqltrie", "diskcache", "configobj", "shtab",
    "dvc_render", "omegaconf", "hydra", "hydra.compose", "platformdirs", "flufl.lock", "grandalf", "dpath", "tqdm",
    "fsspec", "networkx",
    # the report's charts: 0.64 CPU-s of each report stage, measured (it built matplotlib's font cache in its HOME)
    "matplotlib.pyplot", "matplotlib.backends.backend_agg", "matplotlib.backends.backend_svg",
)  # fmt: skip
NEVER_PRELOADED = ("promptflow", "stages", "dvc", "tiktoken")  # read the environment when imported, or are ours
_MAX_REQUEST = 4 << 20  # argv + environment, bytes


def preload_environment(folder: str) -> None:
    """What the server sets before it imports PRELOAD: an empty HOME of its own, as a project copy has, so that what
    a library takes from HOME at import (matplotlib's configuration, font cache and user fonts, fsspec's
    configuration) is what a stage would take, whatever the developer's HOME holds. The fork replaces the whole
    environment with the stage's."""
    home = os.path.join(folder, "home")
    os.makedirs(home, exist_ok=True)
    os.environ["HOME"] = home


def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall(json.dumps(message).encode() + b"\n")


def _receive_line(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError("request too large")
    return data


# --- the shim: what `python` is on a project copy's PATH ---------------------------------------------------------


def forkable(argv: list[str]) -> bool:
    """Whether `python <argv>` is one the server forks: `-m stages.<x> ...` (a local deployment's server and router
    too: `llmops deploy` knows its processes by pid and start time, not by command line) or `-m dvc ...`."""
    if len(argv) < 2 or argv[0] != "-m":
        return False
    return argv[1] == "dvc" or argv[1].startswith("stages.")


def shim(real_python: str, socket_path: str, argv: list[str]) -> None:
    """Run `python -m stages.<x> ...` (and `python -m dvc ...`, as the `dvc` script) as a fork of the server; anything
    else (or no server) as the real python."""
    if not forkable(argv):
        os.execv(real_python, [real_python, *argv])
    if argv[1] == "dvc":
        script_shim(os.path.join(os.path.dirname(real_python), "dvc"), socket_path, argv[2:])
    _forked(socket_path, {"argv": argv}, [real_python, *argv])


def redirect_children(real_python: str, shim_python: Callable[[], str | None]) -> None:
    """From here on, in this process, a child started as `[real_python, -m, stages.<x> | dvc, ...]` (the product
    starts its stage-like children with sys.executable: `pf flow build`'s child, `dvc add`, a local deployment's
    server and router) runs through the shim `shim_python()` names (None: as it is), as a fork of the server. Any
    other command, and any `forkable` refuses, is left as it is."""
    import subprocess

    start = subprocess.Popen.__init__

    def __init__(self: subprocess.Popen, args: object, *more: object, **options: object) -> None:
        if (isinstance(args, list | tuple) and args and args[0] == real_python and options.get("executable") is None
                and forkable([str(arg) for arg in args[1:3]]) and (shim := shim_python())):  # fmt: skip
            args = [shim, *args[1:]]
        start(self, args, *more, **options)  # type: ignore[arg-type]

    subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


def script_shim(script: str, socket_path: str, argv: list[str]) -> None:
    """Run the console script `script` (`dvc`, `llmops`) with `argv` as a fork of the server (or, without a server,
    as itself)."""
    _forked(socket_path, {"script": script, "argv": argv}, [script, *argv])


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _forked(socket_path: str, request: dict, fallback: list[str]) -> None:
    """Hand `request` with this process's working directory, environment and standard streams to the server and end
    as the fork ends; without a server, exec `fallback`."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError:
        os.execv(fallback[0], fallback)
    # From the hand-over until the stage's pid is known, the signals to forward wait (blocked): one that came in
    # between would otherwise end the shim alone, its stage still running (a `dvc repro` stopped as its stage starts).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    hand_over(connection, {**request, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
    reader = connection.makefile("rb")
    pid = json.loads(reader.readline())["pid"]

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)  # the fork's group: the process and what it started, as a group signal reaches

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # what came in meanwhile is forwarded now
    line = reader.readline()
    status = json.loads(line)["status"] if line else 1
    if status < 0:  # killed by a signal: end the same way, so the caller sees what it would see
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


def hand_over(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """Send the server `request` (argv, working directory, environment) with the stage's standard streams `fds`."""
    payload = json.dumps(request).encode() + b"\n"
    connection.sendmsg([payload[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    connection.sendall(payload[1:])


# --- the server ------------------------------------------------------------------------------------------------------


_shim_python = ""  # the `python` shim beside the server's socket (conftest.stage_fork_server makes it)


def serve(socket_path: str) -> None:
    """Import PRELOAD, then fork a stage process for each request until killed."""
    import importlib

    global _shim_python
    _shim_python = os.path.join(os.path.dirname(socket_path), "bin", "python")

    preload_environment(os.path.dirname(socket_path))
    for name in PRELOAD:
        importlib.import_module(name)
    # Out of the collector's sight: a fork's first collection would otherwise touch every preloaded object and so
    # copy the server's pages into each fork (0.2 CPU-s more per stage with this preload, measured).
    gc.collect()
    gc.freeze()
    leaked = [name for name in sys.modules if name.split(".")[0] in NEVER_PRELOADED]
    if leaked:
        raise SystemExit(f"zygote: the preloaded libraries imported {leaked[:5]}")
    base_path = [entry for entry in sys.path[1:] if entry not in _pythonpath(os.environ)]  # [0]: this file's folder
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the stages through their shims
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path + ".tmp")
    server.listen(64)
    os.replace(socket_path + ".tmp", socket_path)  # the shims see the socket only once it accepts
    print("zygote ready", flush=True)
    while True:
        connection, _ = server.accept()
        if os.fork() == 0:
            server.close()
            try:
                _wait_for_stage(connection, base_path)
            finally:
                os._exit(0)
        connection.close()


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]


def _wait_for_stage(connection: socket.socket, base_path: list[str]) -> None:
    """The waiter: starts the stage in a fork of its own, tells the shim its pid and, at its end, its exit status
    (negative: the signal that ended it). The fork leads a process group of its own, which stands for the real
    process and what it starts (a `dvc repro` fork's stage shims): the shim signals that group, and the shim gone
    (killed outright, whether or not it read the pid) → the group is killed."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    first, fds, _flags, _address = socket.recv_fds(connection, 1, 3)
    request = json.loads(first + _receive_line(connection))
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        connection.close()
        _become_stage(request, fds, base_path)
    with contextlib.suppress(OSError):  # set by both, whichever runs first (the child may have exec'd or ended)
        os.setpgid(pid, pid)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        _send(connection, {"pid": pid})
        while True:
            ready, _, _ = select.select([connection, pidfd], [], [])
            if pidfd in ready:
                break
            if not connection.recv(1):
                raise ConnectionAbortedError("the shim closed its end")
    except OSError:  # the shim was killed, before it read the pid (EPIPE, ECONNRESET) or after (EOF): so is the stage
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return
    _, status, usage = os.wait4(pid, 0)
    _count_cpu(usage.ru_utime + usage.ru_stime, request)
    with contextlib.suppress(OSError):
        _send(connection, {"status": os.waitstatus_to_exitcode(status)})


def _count_cpu(seconds: float, request: dict) -> None:
    """Append the stage's CPU seconds to the server's log (conftest's LLMOPS_TEST_CPU hook adds them up) and, with
    LLMOPS_TEST_FORKS=<file>, a JSON line with its command and the test that started it (what a test's forks cost)."""
    with open(os.environ["LLMOPS_ZYGOTE_CPU_LOG"], "a") as log:  # one short append: atomic
        log.write(f"{seconds:.3f}\n")
    if target := os.environ.get("LLMOPS_TEST_FORKS"):
        command = [os.path.basename(request["script"]), *request["argv"]] if request.get("script") else request["argv"]
        record = {"cpu_s": round(seconds, 3), "command": " ".join(command)[:300],
                  "test": request["env"].get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]}  # fmt: skip
        with open(target, "a") as log:
            log.write(json.dumps(record) + "\n")


def _become_stage(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the stage's fork: the shim's streams, working directory, environment and argv, then `python -m`."""
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                            (signal.SIGCHLD, signal.SIG_DFL)):  # fmt: skip
        signal.signal(signum, handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import tempfile

    tempfile.tempdir = None  # a preloaded library asked for the server's; the stage's TMPDIR may differ
    redirect_children(sys.executable, lambda: _shim_python)
    argv, script = request["argv"], request.get("script")
    # A console script has its own folder first on sys.path, `python -m` the working directory.
    sys.path[:] = [os.path.dirname(script) if script else os.getcwd(), *_pythonpath(request["env"]), *base_path]
    sys.argv = [script, *argv] if script else [argv[1], *argv[2:]]  # runpy sets a module's argv[0], as -m does
    code = 0
    try:
        _start_coverage()
        if script:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    _end(code)


def _end(code: int) -> None:
    """The interpreter's usual end, in its order (non-daemon threads joined, atexit handlers run: coverage saves,
    streams flushed), then out without unwinding into the server's loop."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:
        traceback.print_exc()
        code = code or 1
    os._exit(code)


def _start_coverage() -> None:
    """What coverage.py's subprocess patch does at a new interpreter's start-up (make coverage)."""
    if os.environ.get("COVERAGE_PROCESS_START") or os.environ.get("COVERAGE_PROCESS_CONFIG"):
        import coverage

        coverage.process_startup()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
