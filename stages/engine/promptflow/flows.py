"""Prompt flow's three flow kinds loaded in memory for one binding: the in-memory rendering of the decisions of
stages/engine/binding.py (prompt flow connections, model configurations and a FlowContext built from them)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stages.engine import binding as wiring
from stages.engine.binding import LLMBinding, NodeInputs
from stages.engine.kinds import FlowError, load_entry
from stages.engine.promptflow.hooks import raise_unless_completed, tag_row
from stages.engine.runtime import RowFailed, note
from stages.llm.connections import Connection

_LOG_TIME = re.compile(r"^\[\d{4}-\d\d-\d\dT[^\]]*\]\s?")  # prompt flow's time stamp on each captured line
_FLEX_LINE = "__line__"  # a flex row's output, as its __aggregate__ receives it


def _pf_connection(connection: Connection) -> Any:
    from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

    fields = wiring.connection_fields(connection.type, connection.name, connection.api_key, connection.base_url,
                                      connection.api_version)  # fmt: skip
    kind = AzureOpenAIConnection if fields.pop("type") == "azure_open_ai" else OpenAIConnection
    return kind(**fields)


def model_config_object(connection: Connection, kind: str | None = None) -> Any:
    """The model configuration a prompty or a flex flow's `model_config` receives (in memory): of the type `kind`
    asks for (`openai` or `azure_openai`, e.g. from the parameter's annotation), else of the connection's type."""
    from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration

    fields = wiring.connection_model_configuration(connection, kind)
    azure = fields.pop("type") == "azure_openai"
    return (AzureOpenAIModelConfiguration if azure else OpenAIModelConfiguration)(**fields)


def _context(
    bindings: Iterable[LLMBinding],
    node_inputs: NodeInputs,
    python: Mapping[str, Mapping[str, Connection]] | None = None,
) -> Any:
    from promptflow.entities import FlowContext

    connections: dict[str, dict[str, Any]] = {
        node: {name: _pf_connection(connection) for name, connection in inputs.items()}
        for node, inputs in (python or {}).items()
    }
    overrides: dict[str, Any] = {
        f"nodes.{node}.inputs.{name}": value for node, values in node_inputs.items() for name, value in values.items()
    }
    for binding in bindings:
        if binding.node is None:
            raise FlowError("a DAG flow's LLM binding needs the LLM node's name (llm_node in the variant)")
        connections[binding.node] = {"connection": _pf_connection(binding.connection)}
        settings = wiring.node_settings(binding)
        inputs = settings.pop("inputs")
        overrides.update({f"nodes.{binding.node}.{name}": value for name, value in settings.items()})
        overrides.update({f"nodes.{binding.node}.inputs.{name}": value for name, value in inputs.items()})
    return FlowContext(connections=connections, overrides=overrides)


class DagFlow:
    """A DAG flow through prompt flow's executor, which also runs aggregation nodes."""

    def __init__(
        self,
        flow_file: Path,
        bindings: Sequence[LLMBinding],
        node_inputs: NodeInputs,
        node_variants: Mapping[str, str],
        row_timeout_s: float | None,
    ) -> None:
        from promptflow._sdk.entities._flows._flow_context_resolver import FlowContextResolver

        resolver = FlowContextResolver(flow_path=flow_file)
        self.node_variants, bound = wiring.dag_bindings(flow_file, resolver.flow_dag, bindings, node_variants)
        python = wiring.python_connections(resolver.flow_dag, bindings[0].connection if bindings else None,
                                           flow_file.parent)  # fmt: skip
        bindings = bound
        context = _context(bindings, node_inputs, python)
        # The resolver applies the context (connections, prompt and param overrides, after the node variants
        # above) and its invoker owns an executor that can also run aggregation nodes, which the
        # flow-as-a-function call does not.
        resolver._resolve(flow_context=context)
        self._executor = resolver._create_invoker(flow_context=context).executor
        if row_timeout_s is not None:  # the row runtime times rows out; prompt flow's own limit is a backstop after it
            self._line_timeout_s = math.ceil(row_timeout_s) + 1
        else:  # a line may call each LLM more than once (and prompt flow retries): allow a few request timeouts
            request_timeout_s = max((b.connection.request_timeout_s for b in bindings), default=60.0)
            self._line_timeout_s = int(request_timeout_s * 3 * max(1, len(bindings)))

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tag_row(row_id)
        result = self._executor.exec_line(dict(inputs), line_timeout_sec=self._line_timeout_s)
        for node, info in (result.node_run_infos or {}).items():  # what nodes print() (stderr is logged: see above)
            for text in ((getattr(info, "logs", None) or {}).get("stdout") or "").splitlines():
                if text := _LOG_TIME.sub("", text).strip():
                    note(f"[{node}] stdout> {text}")
        raise_unless_completed(result)
        return dict(result.output), dict(result.aggregation_inputs or {})

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        aggregated = self._executor.exec_aggregation(columns, aggregation_inputs)
        failed = [info for info in aggregated.node_run_infos.values() if info.error]
        if failed:
            raise RowFailed(f"aggregation node failed: {failed[0].error}")
        return dict(aggregated.metrics)


class PromptyFlow:
    """A single .prompty file; its text output becomes the row output `output`."""

    def __init__(self, file: Path, binding: LLMBinding | None) -> None:
        self.node_variants: dict[str, str] = {}
        from promptflow.core import Prompty

        model: dict[str, Any] = {}
        if binding:  # the binding's prompt already chose `file` (see detect)
            model = wiring.prompty_model(binding, model_config_object(binding.connection))
        self._prompty = Prompty.load(source=file, model=model)

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tag_row(row_id)
        output = self._prompty(**inputs)
        return (output if isinstance(output, dict) else {"output": output}), {}

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        return {}


class FlexFlow:
    """A flex flow (function or class entry) through prompt flow's script executor.

    The entry gets the run's LLM through the names it declares: a class in its `init` (flow.flex.yaml), a
    function as keyword parameters. `model_config` is the selected connection as an OpenAI or Azure OpenAI
    model configuration, built in memory; `api` is `completion` or `chat`; `prompt` is the variant's prompt
    file (relative to the flow folder); any variant param (e.g. `temperature`) goes to the name it matches.
    Names the entry does not declare are not passed; a function's injected parameters are not flow inputs.
    """

    def __init__(self, flow_file: Path, binding: LLMBinding | None) -> None:
        self.node_variants: dict[str, str] = {}
        from promptflow.executor import FlowExecutor

        from stages.core.yaml_reader import load_yaml

        flow_file = flow_file.resolve()
        spec = load_yaml(flow_file.read_text(encoding="utf-8")) or {}
        entry = load_entry(flow_file.parent, spec.get("entry", ""), flow_file)
        if inspect.isclass(entry):
            parameters = dict(inspect.signature(entry.__init__).parameters)
            parameters.pop("self", None)
            init = _injected(set(spec.get("init") or {}) | set(parameters), binding, parameters)
            self._executor = FlowExecutor.create(flow_file, {}, working_dir=flow_file.parent, init_kwargs=init or None)
        else:
            parameters = dict(inspect.signature(entry).parameters)
            bound = _injected(set(parameters), binding, parameters)
            self._executor = FlowExecutor.create(_bind(entry, bound) if bound else entry, {})

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tag_row(row_id)
        result = self._executor.exec_line(dict(inputs))
        raise_unless_completed(result)
        output = result.output
        if dataclasses.is_dataclass(output) and not isinstance(output, type):
            output = dataclasses.asdict(output)
        outputs = dict(output) if isinstance(output, Mapping) else {"output": output}
        outputs.pop("line_number", None)
        aggregation = {_FLEX_LINE: output} if getattr(self._executor, "_aggr_func", None) else {}
        return outputs, aggregation

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """The class entry's `__aggregate__` over the successful rows' outputs; the metrics are its dict."""
        function = getattr(self._executor, "_aggr_func", None)
        if function is None:
            return {}
        lines = aggregation_inputs.get(_FLEX_LINE, [])
        try:
            output = function(**{self._executor._aggr_input_name: lines})
        except Exception as exc:
            raise RowFailed(f"aggregation failed: __aggregate__ raised {type(exc).__name__}: {exc}") from None
        return dict(output) if isinstance(output, Mapping) else {}


def _injected(
    declared: set[str], binding: LLMBinding | None, parameters: Mapping[str, inspect.Parameter] | None = None
) -> dict[str, Any]:
    """The LLM values a flex entry declares: model_config, api, prompt and variant params, by name. `model_config`
    is of the type its annotation in `parameters` asks for (AzureOpenAIModelConfiguration or
    OpenAIModelConfiguration), else of the connection's type."""
    if binding is None:
        return {}
    values = {name: value for name, value in wiring.flex_values(binding).items() if name in declared}
    if "model_config" in declared:
        parameter = (parameters or {}).get("model_config")
        kind = wiring.model_config_kind(parameter.annotation) if parameter is not None else None
        values["model_config"] = model_config_object(binding.connection, kind)
    return values


def _bind(function: Any, bound: dict[str, Any]) -> Any:
    """`function` with `bound` keyword arguments fixed; its signature (the flow's inputs) no longer lists them."""

    def entry(**inputs: Any) -> Any:
        return function(**inputs, **bound)

    signature = inspect.signature(function)
    entry.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in bound]
    )
    entry.__name__ = entry.__qualname__ = function.__name__
    entry.__doc__, entry.__module__ = function.__doc__, function.__module__
    return entry
