"""What a flow folder declares, read from its files without running or importing it: inputs and outputs with
their types (flow.dag.yaml, flow.flex.yaml or the flex entry's signature, .prompty front matter), the LLM nodes,
python nodes that call an LLM SDK themselves, node inputs that name a prompt flow connection, and whether a flex
entry takes `model_config`. Used by the checks at add/import time (catalogue) and by the importer's choices.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import engine
from stages.core.yaml_reader import load_yaml

# Python annotations -> prompt flow's input/output type names
_TYPES = {
    "str": "string",
    "int": "int",
    "float": "double",
    "bool": "bool",
    "list": "list",
    "List": "list",
    "dict": "object",
    "Dict": "object",
}
_SDK = re.compile(
    r"\b(?:import openai|from openai|AzureOpenAI\(|OpenAI\(|azure\.ai\.inference|OPENAI_API_KEY|"
    r"AZURE_OPENAI_API_KEY|langchain)"
)


@dataclass(frozen=True)
class FlowFacts:
    path: Path
    kind: engine.FlowKind
    file: Path  # flow.dag.yaml, flow.flex.yaml or the .prompty file
    inputs: Mapping[str, tuple[str | None, bool]]  # name -> (type, required: no default)
    outputs: Mapping[str, str | None] | None  # name -> type (None: undeclared); None when not known at all
    llm_nodes: tuple[str, ...] = ()
    variant_nodes: frozenset[str] = frozenset()  # LLM nodes that take their prompt from node_variants
    sdk_callers: tuple[str, ...] = ()  # "node (file.py)" or "file.py": code that builds its own LLM client
    connection_inputs: tuple[str, ...] = ()  # "nodes.<n>.inputs.<i>: <connection>" of python nodes
    model_config: bool | None = None  # a flex entry that takes model_config (None: not a flex flow)
    entry: str = ""
    json_parsers: tuple[str, ...] = ()  # the flow folder's python files that call json.loads (on an LLM's answer?)


def _type_name(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Subscript):
        node = node.value
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return _TYPES.get(name or "", name)


def _parameters(function: ast.FunctionDef, skip_self: bool) -> dict[str, tuple[str | None, bool]]:
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    found = {a.arg: (_type_name(a.annotation), d is None) for a, d in zip(positional, defaults, strict=True)}
    found |= {
        a.arg: (_type_name(a.annotation), d is None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    }
    if skip_self and positional:
        found.pop(positional[0].arg, None)
    return found


def _returned(module: ast.Module, function: ast.FunctionDef) -> dict[str, str | None] | None:
    """A flex entry's outputs from its return annotation: `str` -> output, a TypedDict/dataclass -> its fields."""
    annotation = function.returns
    kind = _type_name(annotation)
    if kind == "string":
        return {"output": "string"}
    if isinstance(annotation, ast.Name):
        for node in module.body:
            if isinstance(node, ast.ClassDef) and node.name == annotation.id:
                return {
                    s.target.id: _type_name(s.annotation)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }
    return None


def _flex_signature(folder: Path, entry: str) -> tuple[dict, dict | None, dict]:
    """(inputs, outputs, init parameters) of a flex entry `module:name`, read with ast (never imported)."""
    module_name, _, name = entry.partition(":")
    source = folder / (module_name.replace(".", "/") + ".py")
    if not source.is_file():
        return {}, None, {}
    module = ast.parse(source.read_text(encoding="utf-8"))
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return _parameters(node, skip_self=False), _returned(module, node), {}
        if isinstance(node, ast.ClassDef) and node.name == name:
            methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            call, init = methods.get("__call__"), methods.get("__init__")
            inputs = _parameters(call, skip_self=True) if call else {}
            outputs = _returned(module, call) if call else None
            return inputs, outputs, _parameters(init, skip_self=True) if init else {}
    return {}, None, {}


_JSON_LOADS = re.compile(r"\bjson\.loads\(")


def _json_parsers(folder: Path) -> tuple[str, ...]:
    return tuple(p.name for p in sorted(folder.glob("*.py")) if _JSON_LOADS.search(p.read_text(encoding="utf-8")))


def _sdk_callers(folder: Path, files: list[tuple[str, Path]]) -> tuple[str, ...]:
    return tuple(label for label, path in files if path.is_file() and _SDK.search(path.read_text(encoding="utf-8")))


def read(flow: Path, prompt: str | None = None) -> FlowFacts:
    """The facts of the flow folder (or .prompty file) `flow` (`prompt` picks a .prompty file in a folder of
    several); raises engine.FlowError when it is no flow."""
    kind, file = engine.detect(flow, prompt)
    declared = engine.interface(flow, prompt)
    folder = file.parent
    if kind is engine.FlowKind.PROMPTY:
        return FlowFacts(flow, kind, file, declared.inputs, declared.outputs)
    if kind is engine.FlowKind.MAF:  # workflow.py: what its INPUTS / OUTPUTS literals declare (none: not checked)
        return FlowFacts(flow, kind, file, declared.inputs, declared.outputs or None)
    spec: dict[str, Any] = load_yaml(file.read_text(encoding="utf-8")) or {}
    if kind is engine.FlowKind.FLEX:
        entry = str(spec.get("entry") or "")
        inputs, outputs, init = _flex_signature(folder, entry)
        init_names = set(spec.get("init") or {}) | set(init)
        callers = _sdk_callers(folder, [(p.name, p) for p in sorted(folder.glob("*.py"))])
        return FlowFacts(
            flow,
            kind,
            file,
            inputs=declared.inputs or inputs,
            outputs=declared.outputs or outputs,
            sdk_callers=callers,
            model_config="model_config" in init_names or "model_config" in inputs,
            entry=entry,
            json_parsers=_json_parsers(folder),
        )
    node_variants = spec.get("node_variants") or {}
    llm, variant_nodes, callers, connection_inputs = [], set(), [], []
    for node in spec.get("nodes") or []:
        resolved = node
        if node.get("use_variants"):
            declared_variants = node_variants.get(node.get("name")) or {}
            default = (declared_variants.get("variants") or {}).get(declared_variants.get("default_variant_id")) or {}
            resolved = default.get("node") or {}
            variant_nodes.add(node["name"])
        if resolved.get("type") == "llm":
            llm.append(node["name"])
            continue
        path = (resolved.get("source") or {}).get("path")
        if resolved.get("type") == "python" and path:
            callers += _sdk_callers(folder, [(f"{node['name']} ({path})", folder / path)])
        for name, value in (resolved.get("inputs") or {}).items():
            if engine.is_connection_input(name, value):
                connection_inputs.append(f"nodes.{node['name']}.inputs.{name}: {value}")
    return FlowFacts(
        flow,
        kind,
        file,
        declared.inputs,
        declared.outputs,
        tuple(llm),
        frozenset(variant_nodes & set(llm)),
        tuple(callers),
        tuple(connection_inputs),
        json_parsers=_json_parsers(folder),
    )


def default_llm_node(facts: FlowFacts) -> str | None:
    """The LLM node a variant's prompt and params go to when none is chosen: the first that takes its prompt
    from the variant (not from the flow's node_variants), else the first."""
    plain = [node for node in facts.llm_nodes if node not in facts.variant_nodes]
    return (plain or list(facts.llm_nodes) or [None])[0]
