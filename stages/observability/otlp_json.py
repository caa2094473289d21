"""Trace files in OTLP JSON: what the run and evaluate stages write beside their outputs, and what the HTML
report and `llmops monitor` read back.

One ExportTraceServiceRequest per line, encoded as the OTLP/JSON spec says (the OpenTelemetry Collector's file
exporter writes the same): the protobuf message of the OTLP exporters (`encode_spans`), its JSON mapping with
lowerCamelCase keys and integer enums, and trace and span ids as hex strings, not base64.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in _ID_KEYS and isinstance(v, str) else _hex_ids(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def to_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The OTLP/JSON form of an ExportTraceServiceRequest holding `spans`."""
    message = MessageToDict(encode_spans(spans), use_integers_for_enums=True, preserving_proto_field_name=False)
    return _hex_ids(message)


class OtlpJsonFileExporter(SpanExporter):
    """Appends each exported batch to `path` as one JSON line (the file is started empty)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        data = (json.dumps(to_json(spans), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._fd < 0:
                return SpanExportResult.FAILURE
            os.write(self._fd, data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass(frozen=True)
class Span:
    """A span read back from a trace file: ids in hex, times in nanoseconds, attributes as plain values."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    service: str

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(any_value: dict[str, Any]) -> Any:
    """An OTLP AnyValue as a Python value."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in any_value:
            return any_value[key]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items or []}


def parse(request: dict[str, Any]) -> Iterator[Span]:
    """The spans of one OTLP/JSON ExportTraceServiceRequest."""
    for resource_spans in request.get("resourceSpans", []):
        service = str(_attributes(resource_spans.get("resource", {}).get("attributes")).get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                yield Span(
                    trace_id=span["traceId"], span_id=span["spanId"], parent_id=span.get("parentSpanId", ""),
                    name=span.get("name", ""), start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)), attributes=_attributes(span.get("attributes")),
                    status=int(span.get("status", {}).get("code", 0)), service=service,
                )  # fmt: skip


def read(path: Path) -> list[Span]:
    """Every span of a trace file (an absent file has none); a line that is not JSON names the file and line."""
    if not path.is_file():
        return []
    spans = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            spans.extend(parse(json.loads(line)))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{number}: not an OTLP JSON trace line ({exc})") from None
    return spans


def traces(spans: Sequence[Span]) -> dict[str, list[Span]]:
    """Spans grouped by trace, each trace in start order."""
    grouped: dict[str, list[Span]] = {}
    for span in spans:
        grouped.setdefault(span.trace_id, []).append(span)
    return {tid: sorted(group, key=lambda s: s.start_ns) for tid, group in grouped.items()}
