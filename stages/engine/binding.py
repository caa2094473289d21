"""How a variant and an LLM meet a flow: the one place that decides which values go where.

A binding (`LLMBinding`) is a connection, the LLM node it wires (DAG flows), a prompt file and sampling params.
For each flow kind this module says what the binding sets: a DAG's LLM nodes (`dag_bindings`, `node_settings`),
a flex entry's init or keyword values (`flex_values`), a prompty's model block (`prompty_model`), the model
configuration and connection a prompt flow LLM client takes (`model_configuration`, `connection_fields`). Two
renderings use these decisions and nothing else: in memory for local runs (stages/engine/promptflow/flows.py builds
prompt flow objects from them) and on disk for baked flows and Azure ML (stages/engine/bake.py writes them into a
copy of the flow, with `${env:...}` references instead of values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.engine.kinds import FlowError, FlowKind
from stages.llm.connections import Connection

DEFAULT_AZURE_API_VERSION = "2024-10-21"  # for an Azure OpenAI client built on an OpenAI connection (see below)
NodeInputs = Mapping[str, Mapping[str, Any]]  # node name -> {input name: value}


@dataclass(frozen=True)
class LLMBinding:
    """How a flow's LLM is wired for a run: connection, prompt file and sampling params.

    For a DAG flow, `node` names the LLM node and `prompt` replaces its template; for a prompty flow,
    `prompt` picks the .prompty file in the folder and `params` override its model parameters.
    """

    connection: Connection
    node: str | None = None
    prompt: str | None = None  # relative to the flow folder, or absolute (a rubric of the judge library)
    params: Mapping[str, Any] = field(default_factory=dict)


class NodeVariantError(FlowError):
    """A node variant selection the DAG flow cannot honour; `node` names the node it selected for."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


def binding_for(connection: Connection, block: Mapping[str, Any], node: str | None = None) -> LLMBinding:
    """The binding a config block describes: `llm_node`, `prompt` (one file, or one per LLM API) and `params`.

    Raises FlowError when the prompt has no file for the connection's API (`completion` or `chat`).
    """
    prompt = block.get("prompt")
    if isinstance(prompt, Mapping):
        if connection.api not in prompt:
            raise FlowError(
                f"no prompt for the {connection.api} API (connection {connection.name}); "
                f"has {', '.join(sorted(prompt))}"
            )
        prompt = prompt[connection.api]
    return LLMBinding(
        connection=connection, node=node or block.get("llm_node"), prompt=prompt, params=block.get("params") or {}
    )


def check_kind(flow: Path, kind: FlowKind, bindings: int, node_settings: bool) -> None:
    """Refuse what only a DAG flow takes: several bindings (one per LLM node), node inputs or node variants."""
    if kind is not FlowKind.DAG and bindings > 1:
        raise FlowError(f"{flow}: a {kind.value} flow has one LLM, got {bindings} bindings")
    if kind is not FlowKind.DAG and node_settings:
        raise FlowError(f"{flow}: node_inputs and node_variants need a DAG flow, this is a {kind.value} flow")


# --- DAG flows -----------------------------------------------------------------------------------------------


def model_input(connection_type: str) -> str:
    """The input of a DAG flow's LLM node that names the model on a connection of `connection_type`:
    `deployment_name` on Azure OpenAI, else `model`."""
    return "deployment_name" if connection_type == "azure_openai" else "model"


def is_connection_input(name: str, value: Any) -> bool:
    """A node input that names a prompt flow connection (`connection: aoai`), not a value or a reference."""
    return (name == "connection" or name.endswith("_connection")) and isinstance(value, str) and "${" not in value


def python_connections(
    dag: Mapping[str, Any], connection: Connection | None, folder: Path | None = None
) -> dict[str, dict[str, Connection]]:
    """The python nodes' connection inputs, each bound to the run's connection: the project's LLM stands in for
    every connection a flow names (a tool such as the template's setup_env then reads its key from it). A tool
    parameter annotated with Azure OpenAI's connection type first (the template's setup_env:
    `Union[AzureOpenAIConnection, OpenAIConnection]`) gets the run's connection as an Azure OpenAI one, whose
    client the LLM proxy translates, as for a model configuration (`model_configuration`)."""
    if connection is None:
        return {}
    bound: dict[str, dict[str, Connection]] = {}
    for node in dag.get("nodes", []):
        if node.get("type") == "python":
            source = (node.get("source") or {}).get("path")
            for name, value in (node.get("inputs") or {}).items():
                if is_connection_input(name, value):
                    kind = connection_kind(_tool_annotation(folder / source, name)) if folder and source else None
                    bound.setdefault(node["name"], {})[name] = _as_kind(connection, kind)
    return bound


def connection_kind(annotation: str | None) -> str | None:
    """`azure_openai` or `openai`: the first of prompt flow's two connection types an annotation names, else None."""
    text = annotation or ""
    spots = {"azure_openai": text.find("AzureOpenAIConnection"), "openai": text.replace("Azure", "_____").find(
        "OpenAIConnection")}  # fmt: skip
    named = sorted((spot, kind) for kind, spot in spots.items() if spot >= 0)
    return named[0][1] if named else None


def _tool_annotation(path: Path, parameter: str) -> str | None:
    """The source text of `parameter`'s annotation in the tool file `path` (its first function taking it)."""
    import ast

    try:
        module = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef):
            for arg in node.args.args + node.args.kwonlyargs:
                if arg.arg == parameter and arg.annotation is not None:
                    return ast.unparse(arg.annotation)
    return None


def _as_kind(connection: Connection, kind: str | None) -> Connection:
    if kind != "azure_openai" or connection.type == "azure_openai":
        return connection
    return dataclasses.replace(
        connection, type="azure_openai", api_version=connection.api_version or DEFAULT_AZURE_API_VERSION
    )


def select_node_variants(flow_file: Path, dag: dict[str, Any], selection: Mapping[str, str]) -> dict[str, str]:
    """Resolve a DAG's `node_variants` in place: each node with `use_variants: true` becomes its selected variant
    (`selection`, else the flow's `default_variant_id`). Returns {node: variant id} of every such node.

    Prompt flow's own variant switch (FlowContext.variant) takes one node; resolving here, before prompt flow
    applies connections and overrides, takes several.
    """
    declared = dag.get("node_variants") or {}
    names = {node["name"] for node in dag.get("nodes", [])}
    for node, variant_id in selection.items():
        if node not in names:
            raise NodeVariantError(f"{flow_file}: no node {node!r} (nodes: {', '.join(sorted(names))})", node)
        if node not in declared:
            with_variants = ", ".join(sorted(declared)) or "none"
            raise NodeVariantError(
                f"{flow_file}: node {node!r} has no node_variants (nodes with variants: {with_variants})", node
            )
        ids = declared[node].get("variants") or {}
        if variant_id not in ids:
            raise NodeVariantError(
                f"{flow_file}: node {node!r} has no variant {variant_id!r} (has {', '.join(ids)})", node
            )
    chosen: dict[str, str] = {}
    nodes = []
    for node in dag.get("nodes", []):
        if not node.get("use_variants"):
            nodes.append(node)
            continue
        name = node["name"]
        config = declared.get(name)
        if not config:
            raise NodeVariantError(f"{flow_file}: node {name!r} uses variants but node_variants has none", name)
        variant_id = selection.get(name) or config.get("default_variant_id")
        try:
            nodes.append({"name": name, **config["variants"][variant_id]["node"]})
        except (KeyError, TypeError):
            raise NodeVariantError(
                f"{flow_file}: node_variants.{name}: no variant {variant_id!r} with a `node`", name
            ) from None
        chosen[name] = str(variant_id)
    dag["nodes"] = nodes
    dag.pop("node_variants", None)
    return chosen


def _api_prompt(folder: Path, node: Mapping[str, Any], api: str) -> str | None:
    """The template a node without a bound prompt uses on `api`: its own, or for another API than it declares
    the sibling by the catalogue's convention (`x.jinja2` for completion, `x.chat.jinja2` for chat) if present."""
    path = str((node.get("source") or {}).get("path") or "")
    if not path or node.get("api", api) == api or not path.endswith(".jinja2"):
        return None
    stem = path.removesuffix(".jinja2").removesuffix(".chat")
    sibling = f"{stem}.chat.jinja2" if api == "chat" else f"{stem}.jinja2"
    return sibling if (folder / sibling).is_file() else None


def all_llm_bindings(folder: Path, dag: Mapping[str, Any], bindings: Sequence[LLMBinding]) -> list[LLMBinding]:
    """`bindings`, and for every other LLM node of the resolved DAG one on the first binding's connection with
    the node's own template and inputs: a flow with several LLM nodes (e.g. selected node variants) runs on one
    connection, while the variant's prompt and params go to its `llm_node` only."""
    llm_nodes = {node["name"]: node for node in dag.get("nodes", []) if node.get("type") == "llm"}
    if not llm_nodes:  # python nodes only (their own LLM clients): a binding without a node has nothing to bind
        bindings = [binding for binding in bindings if binding.node]
    result = []
    for binding in bindings:
        node = llm_nodes.get(binding.node or "")
        if node is not None and not binding.prompt:
            binding = dataclasses.replace(binding, prompt=_api_prompt(folder, node, binding.connection.api))
        result.append(_chat_length(binding, node))
    if bindings:
        bound = {binding.node for binding in bindings}
        connection = bindings[0].connection
        others = [name for name in llm_nodes if name not in bound]
        result += [_chat_length(LLMBinding(connection, name, _api_prompt(folder, llm_nodes[name], connection.api)),
                                llm_nodes[name]) for name in others]  # fmt: skip
    return result


def _chat_length(binding: LLMBinding, node: Mapping[str, Any] | None) -> LLMBinding:
    """A chat node bound to a completion-API connection runs as prompt flow's completion tool, whose max_tokens
    defaults to 16 where the chat tool's is unlimited: a node that sets no max_tokens gets the connection's
    `default_max_tokens` (what the LLM proxy gives a request without one), not an answer cut at 16 tokens."""
    default = binding.connection.default_max_tokens
    if node is None or not default or binding.connection.api != "completion" or node.get("api") == "completion":
        return binding
    if "max_tokens" in (node.get("inputs") or {}) or "max_tokens" in binding.params:
        return binding
    return dataclasses.replace(binding, params={**binding.params, "max_tokens": default})


def dag_bindings(
    flow_file: Path, dag: dict[str, Any], bindings: Sequence[LLMBinding], node_variants: Mapping[str, str]
) -> tuple[dict[str, str], list[LLMBinding]]:
    """Resolve the DAG's node variants in place (`select_node_variants`) and bind every LLM node
    (`all_llm_bindings`): returns {node: variant id} and the bindings. A node whose prompt comes from its node
    variants cannot also take the variant's prompt (NodeVariantError)."""
    chosen = select_node_variants(flow_file, dag, node_variants)
    for binding in bindings:
        if binding.node in chosen and binding.prompt:
            raise NodeVariantError(
                f"{flow_file}: node {binding.node!r} takes its prompt from its node_variants; "
                "select one with node_variants instead of giving a prompt",
                str(binding.node),
            )
    return chosen, all_llm_bindings(flow_file.parent, dag, bindings)


def node_settings(binding: LLMBinding) -> dict[str, Any]:
    """What a binding sets on its LLM node: `api`, `source.path` (the prompt, if any) and `inputs` (the model,
    under the input its connection type names, and the params)."""
    connection = binding.connection
    inputs = {model_input(connection.type): connection.model} if connection.model else {}
    settings: dict[str, Any] = {"api": connection.api, "inputs": {**inputs, **binding.params}}
    if binding.prompt:
        settings["source.path"] = binding.prompt
    return settings


# --- flex and prompty flows, and the LLM configuration they take --------------------------------------------


def flex_values(binding: LLMBinding) -> dict[str, Any]:
    """The values a flex entry may declare, by name (`model_config` aside): the variant's params, `api` and its
    `prompt` file."""
    offered: dict[str, Any] = {**binding.params, "api": binding.connection.api}
    if binding.prompt:
        offered["prompt"] = binding.prompt
    return offered


def prompty_model(binding: LLMBinding, configuration: Any) -> dict[str, Any]:
    """A prompty's `model` block for a binding: its api, the model `configuration`, the variant's params."""
    return {"api": binding.connection.api, "configuration": configuration, "parameters": dict(binding.params)}


def model_config_kind(annotation: Any) -> str | None:
    """`azure_openai` or `openai` when a parameter's annotation names only one model configuration type (also in a
    union, an Optional or a string annotation), else None."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    if isinstance(annotation, type):
        text = annotation.__name__
    azure = "AzureOpenAIModelConfiguration" in text
    openai = "OpenAIModelConfiguration" in text.replace("AzureOpenAIModelConfiguration", "")
    if azure != openai:
        return "azure_openai" if azure else "openai"
    return None


def model_configuration(kind: str, model: str, endpoint: str, api_key: str, api_version: str) -> dict[str, str]:
    """The model configuration (`type` and fields) a prompty or a flex flow's `model_config` takes.

    An Azure OpenAI configuration on an OpenAI connection (a flex class typed `AzureOpenAIModelConfiguration` on
    the embedded model) has the connection's URL as its endpoint: its client asks for
    `/openai/deployments/<model>/...`, which the LLM proxy translates back to the OpenAI layout.
    """
    if kind == "azure_openai":
        return {"type": "azure_openai", "azure_endpoint": endpoint, "api_key": api_key, "azure_deployment": model,
                "api_version": api_version}  # fmt: skip
    return {"type": "openai", "api_key": api_key, "base_url": endpoint, "model": model}


def connection_model_configuration(connection: Connection, kind: str | None = None) -> dict[str, str]:
    """`model_configuration` of a run's connection (in memory): of the type `kind` asks for, else the
    connection's."""
    version = connection.api_version or DEFAULT_AZURE_API_VERSION
    return model_configuration(kind or connection.type, connection.model, connection.base_url, connection.api_key,
                               version)  # fmt: skip


def connection_fields(
    connection_type: str, name: str, api_key: str, endpoint: str, api_version: str | None
) -> dict[str, Any]:
    """A prompt flow connection (`name`, `type` and fields) of a DAG flow's LLM nodes."""
    if connection_type == "azure_openai":
        return {"name": name, "type": "azure_open_ai", "api_key": api_key, "api_base": endpoint,
                "api_type": "azure", "api_version": api_version}  # fmt: skip
    return {"name": name, "type": "open_ai", "api_key": api_key, "base_url": endpoint}


# The variables OpenAI and Azure OpenAI clients read when a flow builds its own (OpenAI(), AzureOpenAI()): set for
# the flow's rows to the run's connection through the LLM proxy, so those requests are cached and counted too.
# AZURE_OPENAI_API_BASE and OPENAI_API_BASE are the older names some examples read.
def llm_environment(connection: Connection) -> dict[str, str]:
    """The environment a flow's own OpenAI / Azure OpenAI client reads, pointed at `connection` (the proxy's URL
    in a run): both layouts point at it, and the LLM proxy translates between them."""
    version = connection.api_version or DEFAULT_AZURE_API_VERSION
    return {
        "OPENAI_API_KEY": connection.api_key,
        "OPENAI_BASE_URL": connection.base_url,
        "OPENAI_API_BASE": connection.base_url,
        "OPENAI_API_VERSION": version,
        "AZURE_OPENAI_API_KEY": connection.api_key,
        "AZURE_OPENAI_ENDPOINT": connection.base_url,
        "AZURE_OPENAI_API_BASE": connection.base_url,
        "AZURE_OPENAI_API_VERSION": version,
        "AZURE_OPENAI_DEPLOYMENT": connection.model,
    }
