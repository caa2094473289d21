"""`llmops migrate`'s node conversion: a prompt flow DAG node as the source of a MAF Executor class.

Each function turns one part of a flow into Python source for `workflow.py` (an LLM, prompt or python node, a
node that cannot be converted, the aggregation nodes, the edges) or reads the flow (the `${...}` references, a
python node's tool function, what copied code imports); `stages.engine.migrate` assembles them.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LLM_PARAMS = ("temperature", "max_tokens", "top_p", "stop", "presence_penalty", "frequency_penalty", "seed",
              "logit_bias", "user", "response_format")  # fmt: skip


CONNECTION_PARAMS = ("model", "deployment_name")  # the run's connection decides, as in a prompt flow run


UNSUPPORTED_PARAMS = {"echo": False, "suffix": None, "best_of": 1, "logprobs": None, "n": 1, "stream": False}


REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w]*)(?:\.([\w.-]+))?\}$")


SHIMMED = {"tool", "log_metric"}


class MigrationError(ValueError):
    """The flow cannot be migrated at all (no DAG or prompty flow, a cycle); the message names the file."""


@dataclass
class Migration:
    flow: Path
    target: Path
    kind: str  # dag | prompty
    converted: list[str] = field(default_factory=list)  # node names
    not_convertible: list[tuple[str, str]] = field(default_factory=list)  # (node or file, reason)
    notes: list[str] = field(default_factory=list)  # converted, with a change worth knowing
    variant_params: dict[str, Any] = field(default_factory=dict)  # create_workflow's default params
    evaluation: Migration | None = None  # the evaluation flow's (`llmops migrate --eval`)


def reference(value: Any) -> tuple[str, str] | None:
    match = REFERENCE.match(value) if isinstance(value, str) else None
    return (match.group(1), match.group(2) or "") if match else None


def upstream(values: list[Any], nodes: set[str]) -> list[str]:
    found = []
    for value in values:
        ref = reference(value)
        if ref and ref[0] in nodes and ref[0] not in found:
            found.append(ref[0])
    return found


def class_name(node: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", node) if part) + "Node"


def tool_function(file: Path) -> str | None:
    """The tool function of a python node's file: the one decorated with `tool`, else its only public function."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]

    def is_tool(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return (target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")) == "tool"

    decorated = [f.name for f in functions if any(is_tool(d) for d in f.decorator_list)]
    if len(decorated) == 1:
        return decorated[0]
    public = [f.name for f in functions if not f.name.startswith("_")]
    return public[0] if len(public) == 1 and not decorated else None


def vendored(root: Path, module: str) -> bool:
    """Whether `module` (stages.x.y) was copied into the migrated folder `root` (see migrate._vendor)."""
    base = root.joinpath(*module.split("."))
    return (base / "__init__.py").is_file() or base.with_suffix(".py").is_file()


def import_problems(file: Path, root: Path) -> list[str]:
    """What a copied python file imports that the MAF environment lacks (prompt flow beyond the shim, `stages`
    modules that were not vendored into the migrated folder `root`)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            names = {alias.name for alias in node.names}
            if top == "promptflow" and (node.module not in ("promptflow", "promptflow.core") or names - SHIMMED):
                imported = ", ".join(sorted(names))
                problems.append(f"line {node.lineno}: from {node.module} import {imported} (the MAF environment has "
                                "no prompt flow; only tool and log_metric are shimmed)")  # fmt: skip
            elif top == "stages" and not vendored(root, node.module):
                problems.append(f"line {node.lineno}: imports the project package `{node.module}`, which the MAF "
                                "environment does not have")  # fmt: skip
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in ("promptflow", "stages"):
                    problems.append(f"line {node.lineno}: import {alias.name} (not in the MAF environment)")
    return problems


def literal(value: Any) -> str:
    """A Python literal for a YAML value (json round-trip keeps it plain; booleans and None spelled for Python)."""
    return repr(json.loads(json.dumps(value)))


def topological(per_row: dict[str, list[str]], where: Path) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            raise MigrationError(f"{where}: the nodes reference each other in a cycle: {' -> '.join([*path, node])}")
        state[node] = 1
        for dependency in per_row[node]:
            visit(dependency, [*path, node])
        state[node] = 2
        order.append(node)

    for node in per_row:  # the DAG's own order where the references allow it
        visit(node, [])
    return order


def edge(upstream: list[str], node: str) -> str:
    if not upstream:
        return f"    builder.add_edge(executors['inputs'], executors[{node!r}])\n"
    if len(upstream) == 1:
        return f"    builder.add_edge(executors[{upstream[0]!r}], executors[{node!r}])\n"
    sources = ", ".join(f"executors[{u!r}]" for u in upstream)
    return f"    builder.add_fan_in_edges([{sources}], executors[{node!r}])\n"


def split_llm_inputs(name: str, inputs: dict[str, Any], migration: Migration) -> tuple[dict, dict, str | None]:
    template_inputs, llm_params = {}, {}
    for key, value in inputs.items():
        if key in LLM_PARAMS:
            llm_params[key] = value
        elif key in CONNECTION_PARAMS:
            migration.notes.append(f"{name}: {key} {value!r} is not kept: the run's connection decides the model, "
                                   "as in a prompt flow run through the toolkit")  # fmt: skip
        elif key in UNSUPPORTED_PARAMS:
            if value != UNSUPPORTED_PARAMS[key]:
                return {}, {}, f"LLM parameter {key}={value!r} has no chat completions equivalent"
        else:
            template_inputs[key] = value
    for key, value in llm_params.items():
        if reference(value):
            return {}, {}, f"LLM parameter {key} comes from {value}: only literal parameters are converted"
    return template_inputs, llm_params, None


def convert_node(
    name: str, kind: Any, node: dict[str, Any], inputs: dict[str, Any], target: Path, migration: Migration,
    is_variant_node: bool,
) -> tuple[str, str, str | None]:  # fmt: skip
    """(class source, build line, None) for a node, or ("", "", reason) when it cannot be converted."""
    source = node.get("source") or {}
    path = source.get("path")
    if source.get("type", "code") != "code" or not path:
        return (
            "",
            "",
            f"a {kind} node from {source.get('type')} {source.get('tool') or path!r}: only code nodes convert",
        )
    if not (target / path).is_file():
        return "", "", f"its source {path} is not in the flow folder"
    cls = class_name(name)
    if kind == "llm":
        template_inputs, llm_params, reason = split_llm_inputs(name, inputs, migration)
        if reason:
            return "", "", reason
        api = str(node.get("api") or "chat")
        text = (f"class {cls}(rt.LLMNode):\n    \"\"\"LLM node `{name}` ({api} API, template {path}).\"\"\"\n\n"
                f"    api = {api!r}\n    inputs = {literal(template_inputs)}\n")  # fmt: skip
        if is_variant_node:
            migration.variant_params = {**llm_params, **migration.variant_params}
            build = f"        {name!r}: {cls}(HERE, prompt, {{**PARAMS, **params}}, id={name!r}),\n"
        else:
            build = f"        {name!r}: {cls}(HERE, {path!r}, {literal(llm_params)}, id={name!r}),\n"
        return text, build, None
    if kind == "prompt":
        text = (f"class {cls}(rt.PromptNode):\n    \"\"\"Prompt node `{name}` (template {path}).\"\"\"\n\n"
                f"    inputs = {literal(inputs)}\n")  # fmt: skip
        return text, f"        {name!r}: {cls}(HERE, {path!r}, id={name!r}),\n", None
    if kind == "python":
        if not path.endswith(".py"):
            return "", "", f"python node source {path} is not a .py file"
        function = tool_function(target / path)
        if function is None:
            return "", "", f"{path} has no single @tool function to call"
        text = (f"class {cls}(rt.PythonNode):\n    \"\"\"Python node `{name}`: {function}() of {path}.\"\"\"\n\n"
                f"    inputs = {literal(inputs)}\n")  # fmt: skip
        build = f"        {name!r}: {cls}(rt.load_function(HERE, {path!r}, {function!r}), id={name!r}),\n"
        return text, build, None
    return "", "", f"node type {kind!r} has no MAF conversion"


def unconverted(name: str, reason: str) -> tuple[str, str]:
    cls = class_name(name)
    message = f"node {name} was not converted by llmops migrate: {reason}"
    text = (f"class {cls}(rt.Node):\n    \"\"\"NOT CONVERTED: node `{name}` ({reason}).\"\"\"\n\n"
            f"    async def run_node(self, inputs):\n"
            f"        raise NotImplementedError({message!r})\n")  # fmt: skip
    return text, f"        {name!r}: {cls}(id={name!r}),\n"


def aggregation_reason(node: dict[str, Any], names: set[str]) -> str | None:
    source = (node.get("source") or {}).get("path") or ""
    if node.get("type") != "python" or not source.endswith(".py"):
        return "an aggregation node that is not a python node"
    if not node.get("_function"):
        return f"{source} has no single @tool function to call"
    for key, value in (node.get("inputs") or {}).items():
        ref = reference(value)
        if ref and ref[0] != "inputs" and ref[0] not in names:
            return f"aggregation input {key} reads {value}, which is not a per-row node of the flow"
    return None


def aggregate_source(aggregations: list[dict[str, Any]]) -> str:
    if not aggregations:
        return ""
    lines = ["", "", "def aggregate(inputs: list[dict], outputs: list[dict], aggregation_inputs: list[dict]) -> dict:",
             '    """The evaluation pattern: the aggregation nodes over the successful rows (their inputs, and the',
             '    per-row node outputs they read), the metrics they log."""',
             "    rows = [{'inputs': i, 'nodes': a, 'bypassed': []} for i, a in zip(inputs, aggregation_inputs)]",
             "    metrics: dict = {}"]  # fmt: skip
    for node in aggregations:
        path = node["source"]["path"]
        values = []
        for key, value in (node.get("inputs") or {}).items():
            ref = reference(value)
            values.append(f"{key!r}: [rt.resolve({value!r}, row) for row in rows]" if ref
                          else f"{key!r}: {literal(value)}")  # fmt: skip
        lines.append(f"    # aggregation node `{node['name']}`")
        lines.append(f"    function = rt.load_function(HERE, {path!r}, {node['_function']!r})")
        lines.append(f"    metrics.update(rt.aggregate_with(function, {{{', '.join(values)}}}))")
    lines.append("    return metrics")
    return "\n".join(lines) + "\n"
