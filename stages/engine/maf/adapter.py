"""The Microsoft Agent Framework engine (`protocol.Engine`): a flow folder with `workflow.py` exporting
`create_workflow()`, run by a worker process of the MAF environment (environment.py; worker.py's JSON-lines
protocol). docs/maf.md says what a MAF flow folder holds and how a variant reaches `create_workflow(**params)`.

The row runtime's threads give the rows their concurrency: each `line` sends its row to the worker and waits for
its result; the worker holds every row it is sent in flight (asyncio, a fresh workflow per row). A worker that
dies fails the rows it held, and every later row, with its exit code and the last lines it wrote.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from stages.core import redaction
from stages.engine.binding import LLMBinding, llm_environment
from stages.engine.kinds import FlowError, FlowInterface, FlowKind
from stages.engine.maf import WORKFLOW_FILE, environment, is_maf_flow
from stages.engine.maf import worker as worker_protocol
from stages.engine.protocol import LineResult, LoadOptions
from stages.engine.runtime import RowFailed
from stages.llm import llm_proxy
from stages.llm.connections import Connection

WORKER = Path(__file__).with_name("worker.py")
ROW_HEADER = "x-llmops-row"  # worker.ROW_HEADER, lower-cased (stages.llm.llm_proxy drops it upstream)
_OUTPUTS, _NODES = "__outputs__", "__nodes__"  # what a row gives the workflow's aggregate()


def in_process_proxy(connection: Connection | None) -> llm_proxy.LLMProxy | None:
    """The LLM proxy of this process that `connection` points at, if any (a stage's run: the worker then sends its
    requests over the protocol)."""
    if connection is None:
        return None
    parts = urlsplit(connection.base_url)
    return llm_proxy.in_process(parts.hostname, parts.port)


def worker_environment(connection: Connection | None) -> dict[str, str]:
    """The variables a workflow's clients read, pointed at `connection` (the stage's LLM proxy, in a run)."""
    if connection is None:
        return {}
    return {**llm_environment(connection), "OPENAI_MODEL": connection.model, "OPENAI_CHAT_MODEL_ID": connection.model}


def workflow_params(bindings: Sequence[LLMBinding]) -> dict[str, Any]:
    """What a variant gives `create_workflow(**params)`: `prompt` (its prompt file for the connection's API,
    relative to the flow folder) when it names one, and each of its LLM `params` by name."""
    if not bindings:
        return {}
    binding = bindings[0]
    return {**({"prompt": binding.prompt} if binding.prompt else {}), **binding.params}


def declared_interface(file: Path) -> FlowInterface:
    """Inputs and outputs read from workflow.py's module-level INPUTS / REQUIRED / OUTPUTS literals (what `llmops
    migrate` writes; a hand-written workflow may declare them too), else nothing declared."""
    found: dict[str, Any] = {}
    for node in ast.parse(file.read_text(encoding="utf-8"), filename=str(file)).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in ("INPUTS", "REQUIRED", "OUTPUTS"):
            with contextlib.suppress(ValueError):
                found[target.id] = ast.literal_eval(node.value)
    required = set(found.get("REQUIRED") or [])
    inputs = {str(name): (None, name in required) for name in found.get("INPUTS") or {}}
    return FlowInterface(inputs, {str(name): None for name in found.get("OUTPUTS") or {}})


class _Worker:
    """One worker process of the MAF environment running `flow` (worker.py's protocol): its rows in flight, and
    why it ended when it did."""

    def __init__(self, flow: Path, python: Path, init: Mapping[str, Any], proxy: llm_proxy.LLMProxy | None) -> None:
        self._proxy = proxy  # answers the worker's `http` messages (init names it to the worker)
        self._http: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._metrics: tuple[threading.Event, list[dict[str, Any]]] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.dead: str | None = None
        environment_ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self._process = subprocess.Popen(
            [str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env={**environment_, "PYTHONUNBUFFERED": "1"}, cwd=flow,
        )  # fmt: skip
        self._ready: list[dict[str, Any]] = []
        self._loaded = threading.Event()
        self._waiting["\0ready"] = (self._loaded, self._ready)
        threading.Thread(target=self._read_stdout, name="maf-worker-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="maf-worker-err", daemon=True).start()
        self._send(init)

    def ready(self) -> dict[str, Any]:
        """Wait for the worker to load the workflow: its `ready` message. Raises FlowError (the worker ended)
        when it did not load."""
        self._loaded.wait()
        if not self._ready or self._ready[0].get("op") != "ready":
            reason = self._ready[0].get("error") if self._ready else self.dead
            self.close()
            raise FlowError(f"the MAF workflow did not load: {redaction.redact(str(reason))}")
        return self._ready[0]

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                print(f"maf worker: {line.rstrip()}", file=sys.stderr)
                continue
            op = message.get("op")
            if op == "http":
                self._answer_http(message)
                continue
            key = "\0ready" if op in ("ready", "failed") else message.get("id") if op == "result" else None
            with self._lock:
                waiter = self._waiting.pop(key, None) if key is not None else None
                if op == "metrics" and self._metrics is not None:
                    waiter, self._metrics = self._metrics, None
            if waiter is not None:
                waiter[1].append(message)
                waiter[0].set()
        code = self._process.wait()
        time.sleep(0.05)  # the stderr reader's last lines
        tail = " | ".join(line for line in list(self._stderr)[-5:] if line.strip())
        with self._lock:
            self.dead = f"the MAF worker exited with code {code}" + (f": {tail}" if tail else "")
            waiters = [*self._waiting.values(), *([self._metrics] if self._metrics else [])]
            self._waiting.clear()
            self._metrics = None
        for event, _ in waiters:  # every row it held fails with why
            event.set()

    def _answer_http(self, message: dict[str, Any]) -> None:
        """A request of the worker to the LLM proxy (worker.py's `http` message), answered in a thread of its own
        by the proxy's handler, as its HTTP server would (it waits for the LLM)."""
        if self._http is None:
            self._http = concurrent.futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="maf-http")
        self._http.submit(self._serve_http, message)

    def _serve_http(self, message: dict[str, Any]) -> None:
        try:
            assert self._proxy is not None, "the worker sent an http message, and no proxy was named"
            body = worker_protocol.decode_body(message)
            answer = self._proxy.handle(str(message["method"]), str(message["path"]), message["headers"], body)
            reply = {"status": answer.status, "content_type": answer.content_type, "give_up": answer.give_up,
                     **worker_protocol.encode_body(answer.body)}  # fmt: skip
        except Exception as exc:  # the proxy answers its errors; anything else is this request's 500
            error = json.dumps({"error": {"message": f"{type(exc).__name__}: {exc}", "type": "llmops_maf_pipe"}})
            reply = {"status": 500, "content_type": "application/json", "give_up": True, "body": error}
        self._send({"op": "http", "id": message.get("id"), **reply})

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())
            sys.stderr.write(redaction.redact(line))

    def _send(self, message: Mapping[str, Any]) -> None:
        stdin = self._process.stdin
        try:
            assert stdin is not None
            with self._lock:
                stdin.write(json.dumps(message, ensure_ascii=False, default=str) + "\n")
                stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader sees the worker gone and fails what waits

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Send the row; wait for its `result` message. Raises RowFailed when the worker ended first."""
        done, answer = threading.Event(), []
        with self._lock:
            if self.dead is not None:
                raise RowFailed(redaction.redact(self.dead))
            self._waiting[row_id] = (done, answer)
        self._send({"op": "row", "id": row_id, "inputs": dict(inputs)})
        done.wait()
        if not answer:
            raise RowFailed(redaction.redact(self.dead or "the MAF worker ended"))
        return answer[0]

    def aggregate(self, message: Mapping[str, Any]) -> dict[str, Any]:
        done, answer = threading.Event(), []
        with self._lock:
            if self.dead is not None:
                raise RowFailed(redaction.redact(self.dead))
            self._metrics = (done, answer)
        self._send(message)
        done.wait()
        if not answer:
            raise RowFailed(redaction.redact(self.dead or "the MAF worker ended"))
        return answer[0]

    def close(self) -> None:
        """End the worker (at exit: its stdin closes and it ends by itself too)."""
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._send({"op": "end"})
                self._process.stdin.close()
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()


class MafFlow:
    """A MAF workflow folder loaded by a worker process of the MAF environment (`protocol.LoadedFlow`). The worker
    holds every row it is sent in flight (asyncio); its LLM requests come back over the protocol to this process's
    LLM proxy (worker.py's `http` messages) when the connection points at one.

    One worker, not several: at concurrency 16 against a 100 ms LLM a second worker process gained nothing
    measurable on 2 busy cores and cost its start (importing agent_framework: ~1 s of CPU) in every run
    (benchmarks/maf-results.md).
    """

    node_variants: Mapping[str, str] = {}

    def __init__(self, flow: Path, python: Path, connection: Connection | None, params: Mapping[str, Any],
                 row_timeout_s: float | None) -> None:  # fmt: skip
        self.flow = flow
        init = {"op": "init", "flow": str(flow.resolve()), "params": dict(params), "concurrency": 100_000,
                "env": worker_environment(connection), "row_timeout_s": row_timeout_s}  # fmt: skip
        self._lock = threading.Lock()
        self._rows: set[str] = set()
        proxy = in_process_proxy(connection)
        if proxy is not None:  # the worker sends its LLM requests to it over the protocol, not loopback HTTP
            init["proxy"] = f"127.0.0.1:{proxy.port}"
        self.worker = _Worker(flow, python, init, proxy)
        try:
            ready = self.worker.ready()
        except FlowError as exc:
            raise FlowError(f"{flow}: {exc}") from None
        self.aggregates = bool(ready.get("aggregates"))

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> LineResult:
        """Send the row to the worker; wait for its result (this thread is the row's slot of the concurrency)."""
        with self._lock:
            if row_id in self._rows:
                raise RowFailed(f"row id {row_id!r} is already running: row ids must be unique")
            self._rows.add(row_id)
        try:
            result = self.worker.line(row_id, inputs)
        finally:
            with self._lock:
                self._rows.discard(row_id)
        if result.get("error"):
            raise RowFailed(result["error"])
        outputs = result.get("outputs") or {}
        return outputs, {_OUTPUTS: outputs, _NODES: result.get("aggregation_inputs") or {}}

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """workflow.py's `aggregate(inputs=..., outputs=..., aggregation_inputs=...)` over the successful rows (in
        the worker); no `aggregate`: no metrics. Raises RowFailed when it fails (the session makes that an
        AggregationError)."""
        if not self.aggregates:
            return {}
        count = len(next(iter(columns.values()), []))
        inputs = [{name: values[i] for name, values in columns.items()} for i in range(count)]
        answer = self.worker.aggregate({"op": "aggregate", "inputs": inputs,
                                            "outputs": aggregation_inputs.get(_OUTPUTS, []),
                                            "aggregation_inputs": aggregation_inputs.get(_NODES, [])})  # fmt: skip
        if answer.get("error"):
            raise RowFailed(str(answer["error"]))
        return dict(answer.get("metrics") or {})

    def close(self) -> None:
        """End the worker (at exit: its stdin closes and it ends by itself too)."""
        self.worker.close()


class MafEngine:
    name = "maf"

    def __init__(self) -> None:
        self._root: Path | None = None

    def detect(self, flow: Path, prompt: str | None) -> tuple[FlowKind, Path] | None:
        return (FlowKind.MAF, flow / WORKFLOW_FILE) if flow.is_dir() and is_maf_flow(flow) else None

    def interface(self, kind: FlowKind, file: Path) -> FlowInterface:
        return declared_interface(file)

    def configure(self, runtime: Path) -> None:
        self._root = runtime.parent  # the MAF environment lives in <project>/.llmops/maf/venv

    def prepare_worker(self) -> None:
        pass

    def environment(self, bindings: Sequence[LLMBinding]) -> dict[str, str]:
        return worker_environment(bindings[0].connection) if bindings else {}

    def load(self, kind: FlowKind, file: Path, flow: Path, bindings: Sequence[LLMBinding],
             options: LoadOptions) -> MafFlow:  # fmt: skip
        from stages.core.project import project_root

        try:
            root = project_root(flow)  # the flow's project (this process's, by default)
        except FileNotFoundError:
            root = project_root()
        try:
            python = environment.ensure(self._root or root)
            environment.install_flow_requirements(self._root or root, flow)  # the folder's own requirements.txt
        except environment.EnvironmentError_ as exc:
            raise FlowError(f"{flow}: {exc}") from None
        connection = bindings[0].connection if bindings else None
        if connection is not None:
            redaction.register(*connection.secrets)
        return MafFlow(flow, python, connection, workflow_params(bindings), options.row_timeout_s)

    def row_of_request(self, headers: Mapping[str, str]) -> str | None:
        """The row a MAF worker's request names (worker.py sets the header on every request of a row)."""
        value = next((v for k, v in headers.items() if k.lower() == ROW_HEADER), None)
        return unquote(value) if value is not None else None
