"""The one module that talks to prompt flow.

Prompt flow is in maintenance until its retirement in April 2027; everything else in the toolkit speaks in
terms of this module's small API (`configure`, `FlowSpec`, `FlowSession`), so the engine can be swapped.
Flows run in-process, row by row, through prompt flow's executor: no run records, no connection database,
no keyring. Connections are built in memory from `connections.Connection` and never persisted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.connections import Connection, redact
from stages.core.io import write_json, write_text

_QUIET_ENV = {
    "PF_DISABLE_TRACING": "true",
    "PF_LOGGING_LEVEL": "WARNING",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "OTEL_SDK_DISABLED": "true",
    "PROMPTFLOW_DISABLE_TELEMETRY": "true",
}


def configure(runtime: Path) -> Path:
    """Point prompt flow at a project-local home and keep it offline and quiet. Call before importing it.

    Telemetry off, no trace service, and a version-check record far in the future (the only way to stop
    prompt flow from asking PyPI for a newer version every 7 days). Nothing is written to ~/.promptflow.
    """
    home = runtime / "pf"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PF_HOME_DIRECTORY"] = str(home)
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    config = home / "pf.yaml"
    if not config.is_file():
        write_text(config, "telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    version_check = home / "pf_version_check.json"
    if not version_check.is_file():
        far_future = "2999-01-01 00:00:00.000000"
        write_json(version_check, {"last_check_time": far_future, "last_hint_time": far_future})
    for name in ("promptflow", "execution", "execution.flow", "execution.bulk", "flowinvoker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return home


@dataclass(frozen=True)
class LLMBinding:
    """How one LLM node of a flow is wired for a run: connection, prompt file and sampling params."""

    node: str
    connection: Connection
    prompt: str | None = None  # a prompt file relative to the flow folder, replacing the node's own
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowResult:
    row_id: str
    outputs: dict[str, Any] | None
    error: str | None
    latency_s: float
    # Values the flow's aggregation nodes need from this row (empty for flows without aggregation).
    aggregation_inputs: dict[str, Any] = field(default_factory=dict, repr=False)


def _pf_connection(connection: Connection) -> Any:
    from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

    if connection.type == "azure_openai":
        return AzureOpenAIConnection(
            name=connection.name,
            api_key=connection.api_key,
            api_base=connection.base_url,
            api_type="azure",
            api_version=connection.api_version,
        )
    return OpenAIConnection(name=connection.name, api_key=connection.api_key, base_url=connection.base_url)


def _context(bindings: Iterable[LLMBinding]) -> Any:
    from promptflow.entities import FlowContext

    connections: dict[str, dict[str, Any]] = {}
    overrides: dict[str, Any] = {}
    for binding in bindings:
        model_field = "deployment_name" if binding.connection.type == "azure_openai" else "model"
        connections[binding.node] = {"connection": _pf_connection(binding.connection)}
        overrides[f"nodes.{binding.node}.api"] = binding.connection.api
        overrides[f"nodes.{binding.node}.inputs.{model_field}"] = binding.connection.model
        if binding.prompt:
            overrides[f"nodes.{binding.node}.source.path"] = binding.prompt
        for name, value in binding.params.items():
            overrides[f"nodes.{binding.node}.inputs.{name}"] = value
    return FlowContext(connections=connections, overrides=overrides)


class FlowSession:
    """A flow loaded once and executed row by row in this process."""

    def __init__(self, flow_dir: Path, bindings: Iterable[LLMBinding] = ()) -> None:
        from promptflow._sdk.entities._flows._flow_context_resolver import FlowContextResolver
        from promptflow.client import load_flow

        self.flow_dir = flow_dir
        self._bindings = tuple(bindings)
        self._secrets = tuple(secret for binding in self._bindings for secret in binding.connection.secrets)
        flow = load_flow(str(flow_dir))
        flow.context = _context(self._bindings)
        # The invoker applies the context (connections, prompt and param overrides) and owns an executor
        # that can also run aggregation nodes, which the flow-as-a-function call does not.
        self._executor = FlowContextResolver.resolve(flow=flow).executor
        self._timeout_s = max((b.connection.request_timeout_s for b in self._bindings), default=60.0) * 3

    def run(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        """Execute one row; a failure is returned as the row's error (secrets redacted), never raised."""
        started = time.perf_counter()
        try:
            result = self._executor.exec_line(dict(inputs), line_timeout_sec=int(self._timeout_s))
        except Exception as exc:  # a flow error belongs to the row, the run goes on
            return RowResult(row_id, None, self._describe(exc), time.perf_counter() - started)
        latency = time.perf_counter() - started
        run_info = result.run_info
        if getattr(run_info.status, "value", str(run_info.status)) != "Completed":
            message = (run_info.error or {}).get("message") or f"flow ended with status {run_info.status}"
            return RowResult(row_id, None, redact(str(message), self._secrets), latency)
        return RowResult(row_id, _jsonable(result.output), None, latency, dict(result.aggregation_inputs or {}))

    def run_rows(self, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[RowResult]:
        for row_id, inputs in rows:
            yield self.run(row_id, inputs)

    def aggregate(self, results: list[RowResult], inputs: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Run the flow's aggregation nodes over the successful rows; returns the metrics they logged."""
        ok = [(result, row) for result, row in zip(results, inputs, strict=True) if result.error is None]
        columns = {name: [row[name] for _, row in ok] for name in (inputs[0] if inputs else {})}
        aggregation_inputs: dict[str, list[Any]] = {}
        for result, _ in ok:
            for name, value in result.aggregation_inputs.items():
                aggregation_inputs.setdefault(name, []).append(value)
        aggregated = self._executor.exec_aggregation(columns, aggregation_inputs)
        failed = [info for info in aggregated.node_run_infos.values() if info.error]
        if failed:
            raise RuntimeError(f"aggregation node failed: {redact(str(failed[0].error), self._secrets)}")
        return dict(aggregated.metrics)

    def _describe(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
