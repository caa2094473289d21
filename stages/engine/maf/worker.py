"""The MAF worker: runs a workflow folder's rows in the MAF environment (stages/engine/maf/environment.py).

Standalone on purpose: it imports only the standard library and agent_framework (it cannot import promptflow, nor
the `stages` package, whose dependencies live in the project's environment). Started as
`<maf venv>/bin/python worker.py` by stages/engine/maf/adapter.py.

Protocol: JSON Lines, one object per line, each with an `op`.
Stage -> worker (stdin):
  {"op": "init", "flow": "<folder>", "params": {...}, "env": {...}, "concurrency": N, "row_timeout_s": S|null,
   "proxy": "127.0.0.1:PORT"|null}
      first line. `params` go to `create_workflow(**params)` (those it declares; all with **kwargs). `env` is set
      in os.environ (the LLM proxy's URL for the clients a workflow builds). Every HTTP request a row's task
      makes (any client, built anywhere) carries the header X-LLMOps-Row: <URL-quoted row id>, so the proxy
      counts it for that row.
  {"op": "row", "id": "<row id>", "inputs": {...}}       run one row (up to N at once, each a fresh workflow)
  {"op": "aggregate", "inputs": [...], "outputs": [...], "aggregation_inputs": [...]}
      after the rows: `aggregate(...)` of workflow.py (the names it declares), over the successful rows
  {"op": "http", "id": N, "status": 200, "content_type": "...", "give_up": bool, "body": "..."|null,
   "body_b64": "..."|null}                                 the stage's LLM proxy answered request N (below)
  {"op": "end"} (or end of input)                          finish the rows in flight, then exit 0
Worker -> stage (stdout; the workflow's own prints go to stderr):
  {"op": "ready", "aggregates": bool}   or   {"op": "failed", "error": "..."} (then exit 1)
  {"op": "result", "id": ..., "outputs": {...}|null, "error": "..."|null, "latency_s": float,
   "aggregation_inputs": {...}}   (an output `__aggregation_inputs__` is moved here, not kept in outputs)
  {"op": "metrics", "metrics": {...}}   or   {"op": "metrics", "error": "..."}
  {"op": "http", "id": N, "method": "POST", "path": "/r0/v1/...", "headers": {...}, "body": "..."|null,
   "body_b64": "..."|null}
      an HTTP request to the stage's LLM proxy, when init named it (`"proxy": "127.0.0.1:PORT"`): every request
      of the OpenAI clients' HTTP stack to that address goes over this pipe instead of loopback HTTP, and the
      stage answers it with its proxy's own handler (the same answer; no HTTP server, sockets or thread per
      connection on either side). A body is UTF-8 text in `body`, else base64 in `body_b64`.

A row's input: the start executor's declared input type decides: a dataclass (or pydantic model) is built from the
row's inputs by field name; `dict` gets the inputs; a single input is passed as its value. A row's outputs: what
the workflow yields (`ctx.yield_output`): a dict (several are merged), else `{"output": value}`.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import dataclasses
import importlib.util
import inspect
import itertools
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote

AGGREGATION_KEY = "__aggregation_inputs__"  # a row output set apart for aggregate() (migrated workflows)
ROW_HEADER = "X-LLMOps-Row"  # stages.llm.llm_proxy drops it upstream (this process cannot import it)
ROW: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmops_row", default=None)


def tag_requests() -> None:
    """Every request of the OpenAI clients' HTTP stack (httpx2) names the row whose task sends it (ROW)."""
    try:
        import httpx2
    except ImportError:
        return
    send = httpx2.AsyncClient.send

    async def tagged_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if (row := ROW.get()) is not None:
            request.headers[ROW_HEADER] = quote(row, safe="")
        return await send(self, request, *args, **kwargs)

    httpx2.AsyncClient.send = tagged_send


def share_tls_context() -> None:
    """One default TLS context per process for the OpenAI clients' HTTP stack (httpx2): a workflow builds its
    clients per row (create_workflow), and each new client loading the CA bundle cost ~95 ms of CPU, most of a
    row's. The same fix as the prompt flow adapter's shared TLS context, for this process (which cannot import it)."""
    try:
        from httpx2._transports import default as transports
    except ImportError:
        return
    create = transports.create_ssl_context
    shared: dict[bool, Any] = {}
    lock = threading.Lock()

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        with lock:
            if trust_env not in shared:
                shared[trust_env] = create(verify=verify, cert=cert, trust_env=trust_env)
            return shared[trust_env]

    transports.create_ssl_context = create_ssl_context


def encode_body(body: bytes | None) -> dict[str, str | None]:
    """A body in a protocol message: UTF-8 text as it is, other bytes in base64."""
    if not body:
        return {"body": None, "body_b64": None}
    try:
        return {"body": body.decode("utf-8"), "body_b64": None}
    except UnicodeDecodeError:
        return {"body": None, "body_b64": base64.b64encode(body).decode("ascii")}


def decode_body(message: dict[str, Any]) -> bytes:
    if message.get("body_b64"):
        return base64.b64decode(message["body_b64"])
    return str(message.get("body") or "").encode("utf-8")


class StagePipe:
    """HTTP requests to the stage's LLM proxy, sent over the protocol (`http` messages) and answered by the stage."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.ids = itertools.count()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        """No more answers will come (the stage ended its input): every request waiting, and every later one, fails
        with `reason`, so the rows end instead of waiting forever."""
        self.closed = reason
        for answer in self.pending.values():
            if not answer.done():
                answer.set_exception(ConnectionError(reason))

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if self.closed is not None:
            raise ConnectionError(self.closed)
        number = next(self.ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[number] = answer
        try:
            self.send({"op": "http", "id": number, "method": method, "path": path, "headers": headers,
                       **encode_body(body)})  # fmt: skip
            return await answer
        finally:
            self.pending.pop(number, None)

    def answered(self, message: dict[str, Any]) -> None:
        answer = self.pending.get(message.get("id"))  # type: ignore[arg-type]
        if answer is not None and not answer.done():  # not a request given up on (its row timed out)
            answer.set_result(message)


def route_to_stage(origin: str, pipe: StagePipe) -> None:
    """Requests of the OpenAI clients' HTTP stack (httpx2) to `origin` (the stage's LLM proxy, host:port) go over
    `pipe`; the client's own steps (headers, auth, retries, the row header above) are unchanged."""
    try:
        import httpx2
    except ImportError:
        return
    handle = httpx2.AsyncHTTPTransport.handle_async_request

    async def handle_async_request(self: Any, request: Any) -> Any:
        if f"{request.url.host}:{request.url.port}" != origin:
            return await handle(self, request)
        body = await request.aread()
        answer = await pipe.request(request.method, request.url.raw_path.decode("ascii"),
                                    dict(request.headers.items()), body)  # fmt: skip
        headers = {"content-type": answer.get("content_type") or "application/json"}
        if answer.get("give_up"):
            headers["x-should-retry"] = "false"
        return httpx2.Response(int(answer["status"]), headers=headers, content=decode_body(answer), request=request)

    httpx2.AsyncHTTPTransport.handle_async_request = handle_async_request


class WorkflowLoadError(Exception):
    pass


def load_module(flow: Path) -> Any:
    """workflow.py of `flow`, imported with the folder on sys.path (its own modules beside it import)."""
    file = flow / "workflow.py"
    if not file.is_file():
        raise WorkflowLoadError(f"{file}: not found (a MAF flow folder has workflow.py exporting create_workflow)")
    sys.path.insert(0, str(flow))
    spec = importlib.util.spec_from_file_location(f"llmops_maf_workflow_{abs(hash(str(flow)))}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "create_workflow", None)):
        raise WorkflowLoadError(f"{file}: defines no create_workflow() (it must return a fresh workflow per call)")
    return module


def accepted(function: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that `function` declares (all of them when it takes **kwargs)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(values)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {name: value for name, value in values.items() if name in names}


def message_for(workflow: Any, inputs: dict[str, Any]) -> Any:
    """The message a row's inputs become for the workflow's start executor (see the module's docstring)."""
    types = list(workflow.get_start_executor().input_types)
    for kind in types:
        if dataclasses.is_dataclass(kind):
            names = {f.name for f in dataclasses.fields(kind)}
            return kind(**{name: value for name, value in inputs.items() if name in names})
        if hasattr(kind, "model_fields"):  # pydantic
            return kind(**{name: value for name, value in inputs.items() if name in kind.model_fields})
    if any(kind in (dict, Any) or getattr(kind, "__origin__", None) is dict for kind in types):
        return dict(inputs)
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    names = ", ".join(getattr(kind, "__name__", str(kind)) for kind in types)
    raise TypeError(
        f"the start executor takes {names}, and the row has {len(inputs)} inputs ({', '.join(inputs)}): declare "
        "its handler's input as a dataclass with those fields, or as dict"
    )


def outputs_of(result: Any) -> dict[str, Any]:
    outputs = list(result.get_outputs())
    if not outputs:
        raise RuntimeError("the workflow yielded no output (ctx.yield_output was never called)")
    if all(isinstance(output, dict) for output in outputs):
        merged: dict[str, Any] = {}
        for output in outputs:
            merged.update(output)
        return merged
    if len(outputs) == 1:
        return {"output": outputs[0]}
    return {"output": outputs}


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: dataclasses.asdict(v) if dataclasses.is_dataclass(v)
                                  else str(v)))  # fmt: skip


async def execute(create: Any, inputs: dict[str, Any], timeout_s: float | None = None) -> tuple[Any, Any, Any]:
    """One row on a fresh workflow from `create()`: (outputs, None, aggregation inputs), or (None, its error, {})
    when it failed or ran past `timeout_s`. The worker, and the Azure ML entry and scoring scripts
    (stages/templates/maf_azure/), run rows with it."""
    try:
        workflow = create()
        run = workflow.run(message_for(workflow, inputs))
        result = await (asyncio.wait_for(run, timeout_s) if timeout_s else run)
        outputs = jsonable(outputs_of(result))
        return outputs, None, outputs.pop(AGGREGATION_KEY, {})
    except TimeoutError:
        return None, f"row timed out after {timeout_s:g} s", {}
    except Exception as exc:  # the row's error, the run goes on
        return None, f"{type(exc).__name__}: {exc}", {}


def load_package(folder: Path) -> tuple[Any, dict[str, Any]]:
    """An Azure ML package (stages/engine/maf/azure.py) as its PRS entry and score.py load it: the workflow factory
    bound to the variant's params, and llmops_run.json (its `env` set where the job or deployment did not)."""
    settings = json.loads((folder / "llmops_run.json").read_text(encoding="utf-8"))
    for key, value in settings.get("env", {}).items():  # the LLM's endpoint and model (never a key)
        os.environ.setdefault(key, value)
    module = load_module(folder / "flow")
    params = accepted(module.create_workflow, settings["params"])
    return lambda: module.create_workflow(**params), settings


class Worker:
    def __init__(self, init: dict[str, Any], send: Any) -> None:
        self.flow = Path(init["flow"]).resolve()
        self.params = dict(init.get("params") or {})
        self.env = {str(k): str(v) for k, v in (init.get("env") or {}).items()}
        self.timeout_s = init.get("row_timeout_s")
        self.slots = asyncio.Semaphore(int(init.get("concurrency") or 1))
        self.send = send
        os.environ.update(self.env)
        self.pipe = StagePipe(send)
        if init.get("proxy"):
            route_to_stage(str(init["proxy"]), self.pipe)
        self.module = load_module(self.flow)
        self.factory_params = accepted(self.module.create_workflow, self.params)
        self.aggregate_fn = getattr(self.module, "aggregate", None)
        self.create()  # fails at load, not on every row, when create_workflow itself is broken

    def create(self) -> Any:
        """A fresh workflow (see the module's docstring)."""
        return self.module.create_workflow(**self.factory_params)

    async def row(self, row_id: str, inputs: dict[str, Any]) -> None:
        ROW.set(row_id)  # this task's context: its requests name the row
        async with self.slots:
            started = time.perf_counter()
            outputs, error, aggregation = await execute(self.create, inputs, self.timeout_s)
            self.send({"op": "result", "id": row_id, "outputs": outputs, "error": error,
                       "latency_s": time.perf_counter() - started, "aggregation_inputs": aggregation})  # fmt: skip

    def aggregate(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                  aggregation_inputs: list[dict[str, Any]]) -> None:  # fmt: skip
        try:
            values = {"inputs": inputs, "outputs": outputs, "aggregation_inputs": aggregation_inputs}
            metrics = self.aggregate_fn(**accepted(self.aggregate_fn, values))
            if not isinstance(metrics, dict):
                raise TypeError(f"aggregate() returned {type(metrics).__name__}, expected a dict of metrics")
            self.send({"op": "metrics", "metrics": jsonable(metrics)})
        except Exception as exc:
            self.send({"op": "metrics", "error": f"{type(exc).__name__}: {exc}"})


async def serve(lines: asyncio.Queue[str | None], send: Any) -> int:
    first = await lines.get()
    try:
        init = json.loads(first or "{}")
        if init.get("op") != "init":
            raise WorkflowLoadError(f"expected an init message first, got {first!r}")
        worker = Worker(init, send)
    except BaseException as exc:
        detail = traceback.format_exc(limit=-3)
        send({"op": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": detail})
        return 1
    send({"op": "ready", "aggregates": callable(worker.aggregate_fn)})
    tasks: set[asyncio.Task[None]] = set()
    while (line := await lines.get()) is not None:
        message = json.loads(line)
        if message["op"] == "row":
            task = asyncio.create_task(worker.row(str(message["id"]), message["inputs"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif message["op"] == "http":
            worker.pipe.answered(message)
        elif message["op"] == "aggregate":
            await asyncio.gather(*tasks)
            worker.aggregate(message["inputs"], message["outputs"], message.get("aggregation_inputs") or [])
        elif message["op"] == "end":
            break
    worker.pipe.close("the stage ended the worker's input: no LLM answer can come back")
    await asyncio.gather(*tasks)
    return 0


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # the workflow's prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        with lock:
            protocol.write(text + "\n")
            protocol.flush()

    share_tls_context()
    tag_requests()
    loop = asyncio.new_event_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                if line.strip():
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except RuntimeError:  # the loop ended first (an `end` message): nothing more to read
            pass

    threading.Thread(target=read, name="stdin", daemon=True).start()
    try:
        return loop.run_until_complete(serve(lines, send))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
