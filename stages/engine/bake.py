"""A use case's flow with one variant written in: what the cloud targets deploy and what Azure ML bulk runs run.

A served (or remotely run) flow cannot be told which variant to run (prompt flow knows nothing of our variants), so
it gets a copy of the flow folder in which the variant's prompt, params and node inputs are the flow's own values,
and the LLM configuration refers to environment variables, never to values. The copy is self-contained (the
project modules its code imports are vendored into it, stages/engine/vendor.py) and deterministic: the same flow and
variant give the same bytes, hence the same hash. What goes where is decided in stages/engine/binding.py, as for a
local run; this module only writes it into the files.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.yaml_reader import load_yaml
from stages.engine import binding as wiring
from stages.engine import vendor
from stages.engine.binding import LLMBinding
from stages.engine.kinds import FlowError, FlowKind
from stages.engine.registry import detect
from stages.llm.connections import Connection

SCRATCH_DIRS = {"__pycache__", ".promptflow"}
# Not copied: the copy is not in git, and prompt flow's build and Azure ML's uploads leave out what a .gitignore
# names (chat_with_pdf's flow ignores its DVC-built index, which the served flow needs).
_SKIPPED_FILES = {".gitignore"}
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `stages` package, vendored from here
WRAPPER = "LlmopsVariant"  # the class entry that a function entry's variant is baked into


def flow_sha256(flow: Path) -> str:
    """SHA-256 over the sorted relative paths and bytes of a flow folder's files (or of one .prompty file),
    leaving out __pycache__ and .promptflow (prompt flow's own scratch files)."""
    files = [flow] if flow.is_file() else sorted(_flow_files(flow))
    digest = hashlib.sha256()
    for file in files:
        relative = file.name if flow.is_file() else file.relative_to(flow).as_posix()
        data = file.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _flow_files(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not SCRATCH_DIRS.intersection(path.relative_to(folder).parts)
    ]


def bake_variant(
    flow: Path, block: Mapping[str, Any], llm: Mapping[str, Any], dest: Path,
    node_variants: Mapping[str, str] | None = None,
) -> Path:  # fmt: skip
    """Copy `flow` to `dest` with the variant `block` (llm_node, prompt, params, node_inputs) as its own values, for
    the LLM `llm` (params.yaml's `llm`: its api, type and model). A DAG flow's node variants are resolved: each node
    with variants becomes the one `node_variants` ({node: variant id}) selects, else its default. Returns the flow
    to serve: the folder, or the .prompty file of a prompty flow. Raises FlowError for a flow whose variant cannot
    be written into it (a NodeVariantError for an unknown node or variant id)."""
    connection = Connection(
        name=str(llm.get("name", "llm")), type=str(llm.get("type", "openai")), api=str(llm.get("api", "chat")),
        model=str(llm.get("model", "")), base_url="", api_key="",
    )  # fmt: skip
    binding = wiring.binding_for(connection, block)
    kind, flow_file = detect(flow, binding.prompt)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(flow, dest, ignore=shutil.ignore_patterns(*SCRATCH_DIRS, *_SKIPPED_FILES))
    node_inputs = block.get("node_inputs") or {}
    wiring.check_kind(flow, kind, 1, bool(node_inputs or node_variants))
    served = dest
    if kind is FlowKind.DAG:
        _bake_dag(dest / flow_file.name, binding, node_inputs, node_variants or {})
    elif kind is FlowKind.FLEX:
        _bake_flex(dest / flow_file.name, binding, llm)
    else:
        for other in dest.glob("*.prompty"):  # a served prompty flow is one file: keep the variant's only
            if other.name != flow_file.name:
                other.unlink()
        _bake_prompty(dest / flow_file.name, binding, llm)
        served = dest / flow_file.name
    vendor.vendor(dest, _PACKAGE_DIR)
    return served


def _bake_dag(
    flow_yaml: Path, binding: LLMBinding, node_inputs: Mapping[str, Mapping[str, Any]],
    node_variants: Mapping[str, str],
) -> None:  # fmt: skip
    """The node variants resolved, and every LLM node bound as a local run binds it (binding.dag_bindings): the
    variant's prompt and params on its `llm_node`, the LLM's api and model on all of them."""
    spec = load_yaml(flow_yaml.read_text(encoding="utf-8"))
    _, bound = wiring.dag_bindings(flow_yaml, spec, [binding], node_variants)
    nodes = {node["name"]: node for node in spec.get("nodes", [])}
    for name in (binding.node, *node_inputs):
        if name not in nodes:
            raise FlowError(f"{flow_yaml}: no node {name!r} (named by the variant)")
    for each in bound:
        node, settings = nodes[str(each.node)], wiring.node_settings(each)
        if "source.path" in settings:
            node.setdefault("source", {})["path"] = settings["source.path"]
        node["api"] = settings["api"]
        node.setdefault("inputs", {}).update(settings["inputs"])
    for name, values in node_inputs.items():
        nodes[name].setdefault("inputs", {}).update(values)
    flow_yaml.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _bake_flex(flow_yaml: Path, binding: LLMBinding, llm: Mapping[str, Any]) -> None:
    """The variant's api, prompt and params, and the LLM's configuration (`${env:...}` references), as the `init`
    defaults of the class entry. A function entry takes them as keyword parameters, which prompt flow's serving
    cannot pass: it is wrapped in a class entry (WRAPPER, appended to its module) whose init does."""
    spec = load_yaml(flow_yaml.read_text(encoding="utf-8"))
    offered = wiring.flex_values(binding)
    init = spec.get("init") or {}
    if not init:
        init = _wrap_function_entry(flow_yaml, spec, set(offered))
    for name, value in offered.items():
        if name in init and name != "model_config":
            init[name] = {**(init[name] or {}), "default": value}
    if "model_config" in init:
        init["model_config"] = {**(init["model_config"] or {}), "default": model_configuration(llm)}
    flow_yaml.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


_YAML_TYPES = {bool: "bool", int: "int", float: "double", str: "string"}


def _wrap_function_entry(flow_yaml: Path, spec: dict[str, Any], offered: set[str]) -> dict[str, Any]:
    """Append WRAPPER to the entry function's module: `__init__` takes the function's keyword-only parameters
    that the toolkit passes (`model_config` and the variant's `offered` ones), `__call__` the flow's inputs. Points
    `entry` at it and returns the new `init` block (defaults filled in by the caller)."""
    module_name, _, function = str(spec["entry"]).partition(":")
    module = flow_yaml.parent / f"{module_name.replace('.', '/')}.py"
    source = module.read_text(encoding="utf-8")
    node = next((n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == function), None)
    if node is None:
        raise FlowError(f"{flow_yaml}: entry {spec['entry']}: no function {function} in {module.name}")
    passed = [a.arg for a in node.args.kwonlyargs if a.arg == "model_config" or a.arg in offered]
    defaults = {a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)}
    if "model_config" not in passed:
        raise FlowError(
            f"{module}: {function} takes no keyword-only `model_config`, so the toolkit cannot give it the LLM"
        )
    positional = [*node.args.posonlyargs, *node.args.args]
    init: dict[str, Any] = {}
    params = ["self", "model_config: dict"]
    for name in (p for p in passed if p != "model_config"):
        default = ast.literal_eval(defaults[name]) if defaults[name] is not None else None
        init[name] = {"type": _YAML_TYPES.get(type(default), "object")}
        params.append(f"{name}={default!r}")
    returns = f" -> {ast.get_source_segment(source, node.returns)}" if node.returns else ""
    inputs = ", ".join(ast.get_source_segment(source, a) or a.arg for a in positional)
    call = ", ".join([*(f"{a.arg}={a.arg}" for a in positional), "**self._kwargs"])
    kwargs = ", ".join(f"{name!r}: {name}" for name in ["model_config", *init])
    module.write_text(
        f"{source.rstrip()}\n\n\n"
        f"# Added by the toolkit (stages/engine/bake.py): prompt flow's serving calls a function entry with the\n"
        f"# flow's inputs only, so the variant's keyword parameters become this class entry's init (flow.flex.yaml).\n"
        f"class {WRAPPER}:\n"
        f"    def __init__({', '.join(params)}) -> None:\n"
        f"        self._kwargs = {{{kwargs}}}\n\n"
        f"    def __call__(self, {inputs}){returns}:\n"
        f"        return {function}({call})\n",
        encoding="utf-8",
    )
    spec["entry"] = f"{module_name}:{WRAPPER}"
    spec["init"] = {"model_config": {"type": "object"}, **init}
    return spec["init"]


def model_configuration(llm: Mapping[str, Any]) -> dict[str, str]:
    """The model configuration of prompty and flex flows for the LLM `llm`, its key and endpoint as `${env:...}`
    references (prompt flow resolves them where the flow runs)."""
    connection = llm_connection_yaml(llm)
    endpoint = connection["api_base"] if llm.get("type") == "azure_openai" else connection["base_url"]
    return wiring.model_configuration(str(llm.get("type")), str(llm.get("model", "")), endpoint,
                                      connection["api_key"], connection.get("api_version", ""))  # fmt: skip


def _bake_prompty(file: Path, binding: LLMBinding, llm: Mapping[str, Any]) -> None:
    """The variant's params into `model.parameters`; a `model.configuration` (which a served prompty needs) from
    the selected LLM when the file has none, its key and endpoint as `${env:...}` references."""
    text = file.read_text(encoding="utf-8")
    _, front, body = text.split("---", 2) if text.startswith("---") else ("", "", text)
    meta = load_yaml(front) or {}
    model = meta.setdefault("model", {})
    settings = wiring.prompty_model(binding, model_configuration(llm))
    model["api"] = settings["api"]
    if not model.get("configuration"):
        model["configuration"] = settings["configuration"]
    model["parameters"] = {**(model.get("parameters") or {}), **settings["parameters"]}
    file.write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---{body}", encoding="utf-8")


def llm_connection_yaml(llm: Mapping[str, Any], name: str = "llm") -> dict[str, Any]:
    """The prompt flow connection a served DAG flow's LLM nodes use, with every secret-ish value as an
    `${env:...}` reference resolved in the container (never a value)."""
    key = f"${{env:{name.upper()}_API_KEY}}"
    if llm.get("type") == "azure_openai":
        endpoint = f"${{env:{llm.get('endpoint_env', 'AZURE_OPENAI_ENDPOINT')}}}"
        return wiring.connection_fields("azure_openai", name, key, endpoint, str(llm.get("api_version", "2024-10-21")))
    return wiring.connection_fields("openai", name, key, str(llm.get("base_url", "")), None)
