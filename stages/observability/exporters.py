"""Where spans and metrics go, and what leaves the process: the exporters `tracing.setup` installs (a trace file,
OTLP/HTTP, Azure Monitor) and `RedactingExporter`, which every exporter sees spans through (secrets and personal
data redacted from names, attributes and events; text content dropped when a deployment asks)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from stages.core import redaction
from stages.observability import pii

OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
AZURE_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_MAX_ATTRIBUTE_CHARS = 4000  # a span attribute (a prompt, an answer) is cut to this


def _redact_any(value: Any, redactor: pii.Redactor) -> Any:
    if isinstance(value, str):
        text = redaction.redact(redactor.redact_text(value))
        return text if len(text) <= _MAX_ATTRIBUTE_CHARS else text[:_MAX_ATTRIBUTE_CHARS] + "..."
    if isinstance(value, tuple | list):
        return tuple(_redact_any(item, redactor) for item in value)
    return value


# Attributes we set from our own identifiers and settings, never from user content: secrets are still redacted
# from them, personal data detection is not run on them (a request id or a model name is no one's phone number).
OWN_ATTRIBUTES = frozenset({"llmops.row_id", "llmops.use_case", "llmops.variant", "llmops.deployment", "llmops.stage",
                            "llmops.cache", "llmops.answered_by", "gen_ai.operation.name", "gen_ai.system",
                            "gen_ai.request.model", "gen_ai.response.model", "server.address"})  # fmt: skip


_NO_PII = pii.Redactor(enabled=False)


# Text attributes that carry no user content (prompt flow's and ours): kept when a deployment's traces leave the
# content out (`observability.traces.content: false`); every other text attribute (inputs, outputs, prompts,
# completions) is then replaced by CONTENT_DROPPED.
STRUCTURAL = OWN_ATTRIBUTES | {"function", "node_name", "span_type", "framework", "line_run_id", "llm.response.model",
                               "span.type"}  # fmt: skip


CONTENT_DROPPED = "<content not traced>"


def repeats_attributes(event: Event, attributes: Mapping[str, Any]) -> bool:
    """Whether `event` only repeats what the span carries as attributes: prompt flow adds a node's inputs, output and
    prompt template twice, as attributes and as `promptflow.*` events whose one `payload` is the same JSON (about
    40% of a bulk run's trace file, redacted and encoded twice)."""
    payload = (event.attributes or {}).get("payload")
    if not isinstance(payload, str) or len(event.attributes or {}) != 1:
        return False
    if any(payload == value for value in attributes.values()):
        return True
    if not payload.startswith("{"):
        return False
    try:
        parsed = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(parsed, dict) or not parsed:
        return False
    return all(key in attributes and attributes[key] == value for key, value in parsed.items())


def redact_span(span: ReadableSpan, redactor: pii.Redactor, content: bool = True) -> ReadableSpan:
    """A copy of `span` with its attributes, events and status message redacted (its name of secrets only), without
    the events that only repeat its attributes; without `content`, text attributes other than STRUCTURAL ones are
    dropped instead."""

    def clean(key: str, value: Any) -> Any:
        if key in OWN_ATTRIBUTES:
            return _redact_any(value, _NO_PII)
        if not content and key not in STRUCTURAL and isinstance(value, str | tuple | list):
            return CONTENT_DROPPED
        return _redact_any(value, redactor)

    attributes = {key: clean(key, value) for key, value in (span.attributes or {}).items()}
    events = [
        Event(event.name, {k: clean(k, v) for k, v in (event.attributes or {}).items()}, event.timestamp)
        for event in span.events
        if not repeats_attributes(event, span.attributes or {})
    ]
    status = span.status
    if status.description:
        status = type(status)(status.status_code, _redact_any(status.description, redactor))
    return ReadableSpan(
        name=_redact_any(span.name, _NO_PII), context=span.context, parent=span.parent, resource=span.resource,
        attributes=attributes, events=events, links=span.links, kind=span.kind, status=status,
        start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
    )  # fmt: skip


class RedactingExporter(SpanExporter):
    """Passes redacted copies of the spans to `inner` (the only way spans leave the process)."""

    def __init__(self, inner: SpanExporter, redactor: pii.Redactor, content: bool = True) -> None:
        self.inner, self.redactor, self.content = inner, redactor, content

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([redact_span(span, self.redactor, self.content) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return getattr(self.inner, "force_flush", lambda *_: True)(timeout_millis)


def _signal_url(env: Mapping[str, str], signal: str) -> str:
    """The OTLP/HTTP URL of a signal: its own variable, else the base endpoint + /v1/<signal> (the spec's rule)."""
    own = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    return own or env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + f"/v1/{signal}"


def _connection_string_secrets(connection_string: str) -> list[str]:
    """The instrumentation key of an Application Insights connection string (redacted on its own too)."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return [value for key, value in parts.items() if key.lower() == "instrumentationkey"]


def backends(
    trace_file: Path | None, env: Mapping[str, str]
) -> tuple[list[tuple[str, SpanExporter]], list[MetricReader]]:
    """The span exporters (named, for messages) and metric readers asked for: the trace file, and the OTLP and
    Azure Monitor backends `env` names; their secrets (OTLP headers, the connection string) registered for
    redaction."""
    exporters: list[tuple[str, SpanExporter]] = []
    readers: list[MetricReader] = []
    if trace_file is not None:
        from stages.observability.otlp_json import OtlpJsonFileExporter

        exporters.append((f"file {trace_file}", OtlpJsonFileExporter(trace_file)))
    otlp = next((env[name] for name in OTLP_ENV if env.get(name)), None)
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        redaction.register(*(env.get(name) for name in ("OTEL_EXPORTER_OTLP_HEADERS",)))
        exporters.append((f"otlp {otlp}", OTLPSpanExporter(endpoint=_signal_url(env, "traces"))))
        if env.get("OTEL_METRICS_EXPORTER", "otlp") != "none":  # e.g. Phoenix takes traces only
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=_signal_url(env, "metrics")),
                                                         export_interval_millis=5000))  # fmt: skip
    if connection_string := env.get(AZURE_ENV):
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter

        redaction.register(connection_string, *_connection_string_secrets(connection_string))
        os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
        azure = {"connection_string": connection_string, "disable_offline_storage": True}
        exporters.append(("azure monitor", AzureMonitorTraceExporter(**azure)))
        readers.append(PeriodicExportingMetricReader(AzureMonitorMetricExporter(**azure),
                                                     export_interval_millis=5000))  # fmt: skip
    return exporters, readers
