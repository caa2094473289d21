"""The runtime of MAF workflows written by `llmops migrate` (`import llmops_maf as rt`): it lives beside worker.py,
so it is on the path of every MAF worker (and is copied into the Azure ML packages, stages/engine/maf/azure.py);
a migrated folder holds only the user's code.

Standalone: it imports agent_framework, jinja2 and yaml (the MAF environment's pins), never promptflow. Each node
of the prompt flow DAG is an Executor; the row's state ({"inputs", "nodes", "bypassed"}) travels along the edges
the `${...}` references give (a node with several upstream nodes is a fan-in and merges their states). Nodes
are bypassed (output None) by their `activate` condition as in prompt flow (its rules: Node.step). LLM nodes
render their Jinja2 template as prompt flow does (sandboxed, trim_blocks, keep_trailing_newline) and call the
chat completions API through `OpenAIChatCompletionClient` built from OPENAI_BASE_URL / OPENAI_API_KEY /
OPENAI_MODEL (the toolkit points them at its LLM proxy): a completion template is one user message (the proxy
sends it to a completion-only model as the very same prompt), a chat template's `# system:` / `# user:` /
`# assistant:` sections are messages.

The copied tool code imports `tool` and `log_metric` from `promptflow.core` (or `promptflow`): when prompt flow is
not installed, this module serves those two names (`tool` leaves the function as it is; `log_metric` records the
metric for `aggregate`). Any other prompt flow import fails when the workflow loads, and `llmops migrate` lists it.
"""

import asyncio
import functools
import importlib.util
import inspect
import os
import re
import sys
import types
from pathlib import Path
from typing import Any, ClassVar, Never

import jinja2
import jinja2.sandbox
import yaml
from agent_framework import Executor, Message, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient

_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w]*)(?:\.([\w.-]+))?\}$")
_CHAT_ROLE = re.compile(r"^\s*#?\s*(system|user|assistant)\s*:\s*$", re.IGNORECASE | re.MULTILINE)
_METRICS: dict[str, Any] = {}
AGGREGATION_KEY = "__aggregation_inputs__"  # stages/engine/maf/worker.py moves it out of the row's outputs


def _install_promptflow_shim() -> None:
    """`promptflow.core.tool` and `log_metric` for copied tool code, when prompt flow is not installed."""
    if importlib.util.find_spec("promptflow") is not None:
        return

    def tool(function: Any = None, **_: Any) -> Any:
        return function if function is not None else (lambda f: f)

    def log_metric(key: str, value: Any, variant_id: str | None = None) -> None:
        _METRICS[key] = value

    for name in ("promptflow", "promptflow.core"):
        module = types.ModuleType(name)
        module.tool, module.log_metric = tool, log_metric
        sys.modules[name] = module
    sys.modules["promptflow"].core = sys.modules["promptflow.core"]


_install_promptflow_shim()


def resolve(value: Any, state: dict[str, Any]) -> Any:
    """A node input: a `${inputs.x}` / `${node.output}` / `${node.output.key}` reference, or the value itself."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    if not match:
        return value
    source, path = match.group(1), (match.group(2) or "").split(".") if match.group(2) else []
    if source == "inputs":
        current = state["inputs"]
    else:
        current = state["nodes"].get(source)
        path = path[1:] if path and path[0] == "output" else path
    for key in path:
        if current is None:  # as prompt flow: a property of a bypassed node's (None) output is an error
            raise LookupError(f"Invalid property {key!r} when accessing the node {source!r}")
        current = current[key] if isinstance(current, dict) else getattr(current, key)
    return current


def referenced_nodes(value: Any) -> set[str]:
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    return {match.group(1)} if match and match.group(1) != "inputs" else set()


_JINJA = jinja2.sandbox.SandboxedEnvironment(trim_blocks=True, keep_trailing_newline=True)
_PROMPTY = re.compile(r"-{3,}\n(.*)-{3,}\n(.*)", re.DOTALL)  # prompt flow's own split of a .prompty file


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> Any:
    return _JINJA.from_string(template)


def render(template: str, inputs: dict[str, Any]) -> str:
    """A Jinja2 prompt rendered as prompt flow renders it (sandboxed, trim_blocks, keep_trailing_newline)."""
    return _compiled(template).render(**inputs)


@functools.lru_cache(maxsize=256)
def read_text(path: Path, mtime_ns: int) -> str:
    """A prompt file's text, read once per version (create_workflow runs per row)."""
    return path.read_text(encoding="utf-8")


def prompt_file(path: Path) -> str:
    return read_text(path, path.stat().st_mtime_ns)


def messages_of(text: str, api: str) -> list[Message]:
    """The chat messages of a rendered prompt: one user message (completion), or its role sections (chat)."""
    if api != "chat" or not _CHAT_ROLE.search(text):
        return [Message("user", [text])]
    parts = _CHAT_ROLE.split(text)
    return [Message(role.lower(), [content.strip()]) for role, content in zip(parts[1::2], parts[2::2], strict=True)]


@functools.lru_cache(maxsize=256)
def split_prompty(text: str) -> tuple[dict[str, Any], str]:
    """A .prompty file's front matter and template."""
    match = _PROMPTY.search(text)
    if not match:
        raise ValueError("not a .prompty file: no front matter between --- lines")
    return yaml.safe_load(match.group(1)) or {}, match.group(2)


def chat_client() -> OpenAIChatCompletionClient:
    """The chat completions client of the run's connection (the toolkit sets these variables to its LLM proxy);
    one per process and connection, shared by the rows (a client per row cost more CPU than the row's request)."""
    try:
        loop = id(asyncio.get_running_loop())  # a client's connections belong to one event loop
    except RuntimeError:
        loop = 0
    return _client(os.environ.get("OPENAI_MODEL", "default"), os.environ["OPENAI_BASE_URL"],
                   os.environ.get("OPENAI_API_KEY") or "none", loop)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _client(model: str, base_url: str, api_key: str, loop: int) -> OpenAIChatCompletionClient:
    return OpenAIChatCompletionClient(model=model, base_url=base_url, api_key=api_key)


def merge(states: list[dict[str, Any]]) -> dict[str, Any]:
    merged = {"inputs": states[0]["inputs"], "nodes": {}, "bypassed": []}
    for state in states:
        merged["nodes"].update(state["nodes"])
        merged["bypassed"] = sorted({*merged["bypassed"], *state["bypassed"]})
    return merged


class Start(Executor):
    """The flow's inputs (with their defaults) become the row's state."""

    def __init__(self, defaults: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.defaults = defaults

    @handler
    async def start(self, inputs: dict, ctx: WorkflowContext[dict]) -> None:
        await ctx.send_message({"inputs": {**self.defaults, **inputs}, "nodes": {}, "bypassed": []})


class Node(Executor):
    """A DAG node: resolves its inputs from the state, runs (unless bypassed), passes the state on."""

    inputs: ClassVar[dict[str, Any]] = {}
    activate: tuple[str, Any] | None = None  # (`when` reference, `is` value)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @handler
    async def one(self, state: dict, ctx: WorkflowContext[dict]) -> None:
        await ctx.send_message(await self.step(state))

    @handler
    async def many(self, states: list[dict], ctx: WorkflowContext[dict]) -> None:
        await ctx.send_message(await self.step(merge(states)))

    async def step(self, state: dict[str, Any]) -> dict[str, Any]:
        """Prompt flow's rules: a node with `activate` is bypassed when the node its condition reads was bypassed
        or the condition is not met; a node without is bypassed when every node it references was. An input that
        references a bypassed node is left out when the function has a default for it, else None."""
        bypassed = set(state["bypassed"])
        upstream = set().union(*(referenced_nodes(v) for v in self.inputs.values()))
        if self.activate is not None:
            when, expected = self.activate
            skip = bool(referenced_nodes(when) & bypassed) or resolve(when, state) != expected
        else:
            skip = bool(upstream) and upstream <= bypassed
        if skip:
            return {**state, "nodes": {**state["nodes"], self.id: None}, "bypassed": [*state["bypassed"], self.id]}
        values = {}
        for name, value in self.inputs.items():
            if referenced_nodes(value) & bypassed:
                if not self.has_default(name):
                    values[name] = None
            else:
                values[name] = resolve(value, state)
        output = await self.run_node(values)
        return {**state, "nodes": {**state["nodes"], self.id: output}}

    def has_default(self, name: str) -> bool:
        return False

    async def run_node(self, inputs: dict[str, Any]) -> Any:
        raise NotImplementedError


class LLMNode(Node):
    """An LLM node: its template (a file of the flow folder) rendered with its inputs, sent with its params."""

    api = "completion"

    def __init__(self, folder: Path, prompt: str, params: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.template = prompt_file(folder / prompt)
        self.params = {name: value for name, value in params.items() if value is not None}
        self.client = chat_client()

    def prompt_text(self, inputs: dict[str, Any]) -> str:
        return render(self.template, inputs)

    async def run_node(self, inputs: dict[str, Any]) -> Any:
        response = await self.client.get_response(messages_of(self.prompt_text(inputs), self.api), options=self.params)
        return "\n".join(message.text for message in response.messages)  # as answered (ChatResponse.text strips)


class PromptyNode(LLMNode):
    """A .prompty flow: its front matter's API and parameters (the variant's params win), its template."""

    def __init__(self, folder: Path, prompt: str, params: dict[str, Any], **kwargs: Any) -> None:
        front, template = split_prompty(prompt_file(folder / prompt))
        model = front.get("model") or {}
        super().__init__(folder, prompt, {**(model.get("parameters") or {}), **params}, **kwargs)
        self.template, self.api = template, str(model.get("api") or "chat")


class PromptNode(Node):
    """A prompt node: its template rendered with its inputs."""

    def __init__(self, folder: Path, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.template = prompt_file(folder / source)

    async def run_node(self, inputs: dict[str, Any]) -> Any:
        return render(self.template, inputs)


@functools.cache
def load_function(folder: Path, source: str, function: str | None = None) -> Any:
    """The tool function of a python node's file (named, or the file's only `@tool` / public function)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"llmops_tool_{Path(source).stem}", folder / source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function) if function else module


class PythonNode(Node):
    """A python node: the copied tool function called with its inputs (in a thread unless it is async)."""

    def __init__(self, function: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function

    def has_default(self, name: str) -> bool:
        parameter = inspect.signature(self.function).parameters.get(name)
        return parameter is not None and parameter.default is not inspect.Parameter.empty

    async def run_node(self, inputs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**inputs)
        return await asyncio.to_thread(self.function, **inputs)


class Outputs(Executor):
    """The flow's outputs, from their references: the workflow's output."""

    def __init__(self, outputs: dict[str, str], keep: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outputs, self.keep = outputs, list(keep or [])

    @handler
    async def one(self, state: dict, ctx: WorkflowContext[Never, dict]) -> None:
        outputs = {name: resolve(ref, state) for name, ref in self.outputs.items()}
        if self.keep:  # the per-row node outputs the aggregation nodes read (the worker sets them apart)
            outputs[AGGREGATION_KEY] = {node: state["nodes"].get(node) for node in self.keep}
        await ctx.yield_output(outputs)

    @handler
    async def many(self, states: list[dict], ctx: WorkflowContext[Never, dict]) -> None:
        await self.one(merge(states), ctx)


def aggregate_with(function: Any, values: dict[str, list[Any]]) -> dict[str, Any]:
    """An aggregation node's function over the rows' values; the metrics it logs (log_metric)."""
    _METRICS.clear()
    returned = function(**values)
    logged = dict(_METRICS)
    if not logged and isinstance(returned, dict):
        logged = returned  # a function that returns its metrics without logging them
    return logged
