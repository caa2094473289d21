"""OpenTelemetry traces and metrics of rows and requests: one trace per dataset row (bulk runs, evaluations) or
per endpoint request, a span per flow node (prompt flow's own spans) and per LLM call (the LLM proxy's).

`setup()` installs the process's tracer provider once and points it at the exporters asked for:
- a trace file (`OtlpJsonFileExporter`): OTLP JSON, one ExportTraceServiceRequest per line, as the OpenTelemetry
  Collector's file exporter writes it; the run and evaluate stages write one beside their outputs;
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): the OTLP/HTTP exporters, traces and
  metrics, to any OTLP receiver (Phoenix, Jaeger, an OpenTelemetry Collector);
- `APPLICATIONINSIGHTS_CONNECTION_STRING`: the Azure Monitor exporters (Application Insights), offline storage off.
Every exporter sees spans through `RedactingExporter`: secrets (stages.core.redaction) and personal data
(stages.observability.pii) are redacted from names, attributes and events before anything leaves the process,
including prompt flow's spans, which carry a node's inputs and outputs.

LLM call spans follow the GenAI semantic conventions (`gen_ai.operation.name`, `gen_ai.request.model`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.response.model`); our own attributes are under
`llmops.*` (use case, variant, repeat, row id, cache hit or miss, retries, which connection answered).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from stages.observability import pii
from stages.observability.exporters import AZURE_ENV as AZURE_ENV  # re-exported: the variable it reads
from stages.observability.exporters import RedactingExporter, backends

TRACER = "llmops"
_REPEAT_TAG = re.compile(r"^(?P<row>.*)#(?P<repeat>\d+)$")


class _Switch(SpanProcessor):
    """The one processor on the global provider; `setup()` swaps what it feeds (the global provider cannot be
    replaced once set, and a test or a server sets up tracing more than once)."""

    def __init__(self) -> None:
        self.processors: list[SpanProcessor] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for processor in self.processors:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self.processors)


_switch = _Switch()
_lock = threading.Lock()
_provider: TracerProvider | None = None


def _global_provider() -> TracerProvider:
    global _provider
    # flow_engine.QUIET_ENV disables the SDK (prompt flow's own telemetry stays off); asking for traces enables it.
    os.environ["OTEL_SDK_DISABLED"] = "false"
    with _lock:
        if _provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):  # someone (prompt flow) set one already: add to it
                current._disabled = False  # made while the SDK was disabled
                _provider = current
            else:
                _provider = TracerProvider(resource=Resource.create({"service.name": "llmops"}))
                trace.set_tracer_provider(_provider)
            _provider.add_span_processor(_switch)
        return _provider


@dataclass
class Telemetry:
    """What `setup()` installed: `shutdown()` flushes and detaches every exporter (call it before exiting)."""

    exporters: list[str] = field(default_factory=list)
    meter_provider: MeterProvider | None = None
    redactor: pii.Redactor = pii.DEFAULT
    _processors: list[SpanProcessor] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self._processors)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def flush(self) -> None:
        for processor in self._processors:
            processor.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def shutdown(self) -> None:
        global _current
        with _lock:
            _switch.processors = [p for p in _switch.processors if p not in self._processors]
        for processor in self._processors:
            processor.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        self._processors = []
        if _current is self:
            _current = Telemetry()


_current = Telemetry()


def current() -> Telemetry:
    return _current


def setup(
    service: str,
    trace_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    redactor: pii.Redactor = pii.DEFAULT,
    attributes: Mapping[str, str] | None = None,
    content: bool = True,
) -> Telemetry:
    """Send this process's spans to the trace file and to the backends `env` names (default: os.environ), redacted
    by `redactor` (and without their text content unless `content`).

        Nothing is installed (and `Telemetry.enabled` is False) when there is no file and no backend. The connection
        string and OTLP headers are registered as secrets, so they are redacted wherever this process writes text.
    """
    global _current
    env = os.environ if env is None else env
    _current.shutdown()
    telemetry = Telemetry(redactor=redactor)
    exporters, readers = backends(trace_file, env)
    if not exporters:
        _current = telemetry
        return telemetry
    provider = _global_provider()
    if attributes or service:
        provider._resource = provider.resource.merge(Resource.create({"service.name": service, **(attributes or {})}))
    telemetry._processors = [
        BatchSpanProcessor(RedactingExporter(exporter, redactor, content), schedule_delay_millis=1000)
        for _, exporter in exporters
    ]
    telemetry.exporters = [name for name, _ in exporters]
    if readers:
        telemetry.meter_provider = MeterProvider(readers, resource=provider.resource)
    with _lock:
        _switch.processors = [*_switch.processors, *telemetry._processors]
    # prompt flow's own spans (flow, nodes, LLM tool calls) are made only with its tracing switched on; the SDK's
    # complaints about the None-valued attributes prompt flow sets (token details) are noise
    os.environ["PF_DISABLE_TRACING"] = "false"
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)
    _current = telemetry
    return telemetry


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


# Attributes every row span of this process gets (the stage sets use case and variant as it goes).
_attributes: dict[str, Any] = {}
_rows: dict[str, trace.Span] = {}  # open row spans by row tag: the parents of their LLM calls


def set_attributes(**values: Any) -> None:
    """`llmops.<name>` attributes of the row spans started from now on (None removes one)."""
    for name, value in values.items():
        if value is None:
            _attributes.pop(f"llmops.{name}", None)
        else:
            _attributes[f"llmops.{name}"] = value


def row_attributes(tag: str) -> dict[str, Any]:
    """The attributes of a row span: the stage's, the row id and the repeat a `<row>#<repeat>` tag carries."""
    match = _REPEAT_TAG.match(tag)
    row, repeat = (match["row"], int(match["repeat"])) if match else (tag, 0)
    return {**_attributes, "llmops.row_id": row, "llmops.repeat": repeat}


@contextlib.contextmanager
def row_span(tag: str, name: str = "row", **extra: Any) -> Iterator[trace.Span]:
    """A new trace for one row or request: the LLM calls made for `tag` (wherever the proxy serves them) become
    its children, and so do prompt flow's spans made in this context. A no-op span when tracing is off."""
    if not _current.enabled:
        yield trace.INVALID_SPAN
        return
    attributes = {**row_attributes(tag), **{f"llmops.{k}": v for k, v in extra.items() if v is not None}}
    with tracer().start_as_current_span(name, context=trace.set_span_in_context(trace.INVALID_SPAN),
                                        attributes=attributes) as span:  # fmt: skip
        _rows[tag] = span
        try:
            yield span
        finally:
            _rows.pop(tag, None)


@dataclass
class LLMCall:
    """What the proxy learns about one LLM call while it serves it; becomes the span's attributes."""

    span: trace.Span

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if value is not None:
                self.span.set_attribute(name, value)


@contextlib.contextmanager
def llm_span(row: str | None, path: str, request: Mapping[str, Any]) -> Iterator[LLMCall]:
    """A span for one LLM request, child of its row's span (or of the current span)."""
    if not _current.enabled:
        yield LLMCall(trace.INVALID_SPAN)
        return
    # The row's trace: under the current span when the call is made in the row's own context (a flow's client
    # calling the proxy in-process, inside prompt flow's node span), else directly under the row's span.
    parent = _rows.get(row or "")
    current = trace.get_current_span().get_span_context()
    in_row = parent is not None and current.is_valid and current.trace_id == parent.get_span_context().trace_id
    context = trace.set_span_in_context(parent) if parent is not None and not in_row else None
    operation = (
        "chat" if path.endswith("/chat/completions") else "embeddings" if "embeddings" in path else "text_completion"
    )
    model = str(request.get("model") or "")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation, "gen_ai.system": "openai", "gen_ai.request.model": model,
        "server.address": path,
    }  # fmt: skip
    for name in ("max_tokens", "temperature", "top_p"):
        if isinstance(request.get(name), int | float):
            attributes[f"gen_ai.request.{name}"] = request[name]
    prompt = request.get("prompt") if operation == "text_completion" else request.get("messages")
    if prompt is not None:
        attributes["gen_ai.prompt"] = prompt if isinstance(prompt, str) else _json(prompt)
    if row:
        attributes.update(row_attributes(row))
    with tracer().start_as_current_span(f"{operation} {model}".strip(), context=context, kind=trace.SpanKind.CLIENT,
                                        attributes=attributes) as span:  # fmt: skip
        yield LLMCall(span)


def response_attributes(response: Mapping[str, Any]) -> dict[str, Any]:
    """GenAI attributes of an OpenAI-style answer: usage, response model, finish reason, the completion text."""
    usage = response.get("usage") if isinstance(response.get("usage"), Mapping) else {}
    choices = response.get("choices") if isinstance(response.get("choices"), list) else []
    first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    text = first.get("text")
    if text is None and isinstance(first.get("message"), Mapping):
        text = first["message"].get("content")
    return {
        "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
        "gen_ai.response.model": response.get("model"),
        "gen_ai.response.finish_reasons": (first.get("finish_reason"),) if first.get("finish_reason") else None,
        "gen_ai.completion": text if isinstance(text, str) else None,
    }


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


# Metrics: instruments on the global meter of the Telemetry that asked for them (no-ops otherwise).
def meter() -> metrics.Meter:
    provider = _current.meter_provider
    return provider.get_meter(TRACER) if provider is not None else metrics.NoOpMeter(TRACER)


def record_request(attributes: Mapping[str, Any], latency_s: float, status: int) -> None:
    """Count an endpoint request and its latency (OTel metrics `llmops.requests`, `llmops.request.duration`)."""
    m = meter()
    labels = {**attributes, "http.response.status_code": status}
    m.create_counter("llmops.requests", description="endpoint requests").add(1, labels)
    m.create_histogram("llmops.request.duration", unit="s", description="endpoint latency").record(latency_s, labels)


def count(name: str, attributes: Mapping[str, Any], description: str = "") -> None:
    meter().create_counter(f"llmops.{name}", description=description).add(1, dict(attributes))
