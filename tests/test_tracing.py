"""Traces: one trace per row, GenAI spans for LLM calls, OTLP JSON files, the redaction of every export, and the
exporters at their boundary (a real OTLP backend, the Azure Monitor ingestion endpoint)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import StubLLM, http_server, post_json
from stub_llm import reply_json

from stages.core import redaction
from stages.llm import llm_proxy
from stages.observability import otlp_json, pii, tracing, waterfall

BODY = {"model": "m", "prompt": "Question: 2+2?\nAnswer:", "max_tokens": 3, "temperature": 0, "stop": ["\n"]}
RETRY = llm_proxy.RetryPolicy(attempts=3, base_s=0.01, max_s=5)


@pytest.fixture(autouse=True)
def _no_telemetry_left() -> Iterator[None]:
    yield
    tracing.current().shutdown()
    tracing.set_attributes(use_case=None, variant=None)


def row_of(headers: dict) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "x-row"), None)


def test_a_row_is_one_trace_with_genai_spans_for_its_llm_calls(stub_llm: StubLLM, tmp_path: Path) -> None:
    trace_file = tmp_path / "traces.jsonl"
    telemetry = tracing.setup("test", trace_file, env={}, redactor=pii.Redactor(enabled=False))
    tracing.set_attributes(use_case="uc", variant="v2")
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=5, row_of=row_of) as proxy:
        with tracing.row_span("row-1#1"):
            for _ in range(2):  # a miss, then a hit
                assert post_json(f"{proxy.base_url()}/completions", BODY, {"X-Row": "row-1#1"})[0] == 200
        with tracing.row_span("row-2"):
            assert post_json(f"{proxy.base_url()}/completions", {**BODY, "prompt": "Q"}, {"X-Row": "row-2"})[0] == 200
    telemetry.shutdown()
    lines = trace_file.read_text().splitlines()
    assert lines and all("resourceSpans" in json.loads(line) for line in lines)
    spans = otlp_json.read(trace_file)
    traces = otlp_json.traces(spans)
    assert len(traces) == 2  # one per row
    first = next(t for t in traces.values() if any(s.attributes.get("llmops.row_id") == "row-1" for s in t))
    row, *calls = first
    assert row.name == "row" and row.parent_id == "" and len(row.trace_id) == 32 and len(row.span_id) == 16
    assert row.attributes.items() >= {"llmops.row_id": "row-1", "llmops.repeat": 1, "llmops.use_case": "uc",
                                      "llmops.variant": "v2"}.items()  # fmt: skip
    assert [c.parent_id for c in calls] == [row.span_id] * 2
    assert [c.attributes["llmops.cache"] for c in calls] == ["miss", "hit"]
    for call in calls:
        a = call.attributes
        assert a["gen_ai.operation.name"] == "text_completion" and a["gen_ai.request.model"] == "m"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.prompt"] == BODY["prompt"] and a["llmops.retries"] == 0 and call.duration_s > 0
    page = waterfall.render(first, "row-1")
    assert page.count('class="row"') == 3 and "cache hit" in page and "cache miss" in page


def test_without_a_file_or_backend_nothing_is_traced(tmp_path: Path) -> None:
    telemetry = tracing.setup("test", None, env={})
    assert not telemetry.enabled
    with tracing.row_span("r") as span:
        assert not span.is_recording()


def test_every_export_is_redacted_pii_and_secrets(tmp_path: Path) -> None:
    redaction.register("sk-trace-secret-123")
    trace_file = tmp_path / "t.jsonl"
    telemetry = tracing.setup("test", trace_file, env={})
    with tracing.row_span("r") as span:
        span.set_attribute("input", "mail jane@example.org, key sk-trace-secret-123, card 4111 1111 1111 1111")
        span.add_event("answer", {"text": "call +44 20 7946 0958"})
    telemetry.shutdown()
    text = trace_file.read_text()
    for raw in ("jane@example.org", "sk-trace-secret-123", "4111 1111 1111 1111", "7946 0958"):
        assert raw not in text
    assert "<EMAIL>" in text and "***" in text and "<CARD>" in text and "<PHONE>" in text


def test_events_that_repeat_a_spans_attributes_are_left_out_of_every_export(tmp_path: Path) -> None:
    """Prompt flow puts a traced function's inputs and output on its span twice, as attributes and as events with the
    same JSON: the export keeps the attributes and drops the copies, and keeps every other event."""
    from opentelemetry.sdk.trace import Event
    from promptflow.tracing import trace

    from stages.observability.exporters import repeats_attributes

    trace_file = tmp_path / "t.jsonl"
    telemetry = tracing.setup("test", trace_file, env={}, redactor=pii.Redactor(enabled=False))

    @trace
    def shout(question: str) -> str:
        return question.upper()

    with tracing.row_span("r") as span:
        assert shout("what is 2+2?") == "WHAT IS 2+2?"
        span.add_event("checked", {"payload": "not an attribute"})
    telemetry.shutdown()
    node = next(s for s in otlp_json.read(trace_file) if s.name.endswith("shout"))
    assert json.loads(node.attributes["inputs"]) == {"question": "what is 2+2?"}
    assert json.loads(node.attributes["output"]) == "WHAT IS 2+2?"
    # otlp_json.Span has no events (nothing of ours reads them): read them off the file's OTLP JSON
    raw = [s for line in trace_file.read_text().splitlines() for r in json.loads(line)["resourceSpans"]
           for scope in r["scopeSpans"] for s in scope["spans"]]  # fmt: skip
    events = {s["name"]: [e["name"] for e in s.get("events", [])] for s in raw}
    assert events[node.name] == []  # promptflow.function.inputs and .output carried the same JSON
    assert events["row"] == ["checked"]

    # The rule: a lone payload equal to one attribute, or a JSON object of attributes with the same values.
    prompt = {"prompt.template": "Q: {{q}}", "prompt.variables": '{"q": "x"}'}
    assert repeats_attributes(Event("e", {"payload": json.dumps(prompt, indent=2)}), {**prompt, "other": 1})
    assert not repeats_attributes(Event("e", {"payload": json.dumps(prompt)}), {"prompt.template": "Q: {{q}}"})
    assert not repeats_attributes(Event("e", {"payload": '"x"', "more": 1}), {"output": '"x"'})
    assert not repeats_attributes(Event("e", {"payload": "{not json"}), {"output": "{"})
    assert not repeats_attributes(Event("e", {"payload": "{}"}), {"output": "[]"})  # an empty object repeats nothing


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes, dict]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append((self.path, body, dict(self.headers)))
        reply_json(self, 200, {"itemsReceived": 1, "itemsAccepted": 1, "errors": []})


def test_azure_monitor_exporter_requests_at_the_ingestion_boundary(tmp_path: Path) -> None:
    """The Azure exporter's requests, at a local ingestion endpoint: the span with its GenAI attributes, the
    instrumentation key where Azure reads it, and the connection string in no file this process writes."""
    _Recorder.received = []
    key = "c0ffee00-1234-4abc-9def-0123456789ab"
    trace_file = tmp_path / "t.jsonl"
    with http_server(_Recorder) as port:
        connection_string = f"InstrumentationKey={key};IngestionEndpoint=http://127.0.0.1:{port}/"
        telemetry = tracing.setup("azure-test", trace_file, env={tracing.AZURE_ENV: connection_string})
        assert telemetry.exporters == [f"file {trace_file}", "azure monitor"]
        with tracing.row_span("row-9"), tracing.llm_span("row-9", "/r0/v1/completions", BODY) as call:
            call.set(**tracing.response_attributes({"usage": {"prompt_tokens": 7, "completion_tokens": 2}}))
        telemetry.shutdown()
    tracks = [(path, body) for path, body, _ in _Recorder.received if path.endswith("/track")]
    assert tracks and all(path == "/v2.1/track" for path, _ in tracks)
    envelopes = [
        e for _, body in tracks for e in json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
    ]
    dependency = next(e for e in envelopes if e["data"]["baseType"] == "RemoteDependencyData")
    request = next(e for e in envelopes if e["data"]["baseType"] in ("RequestData", "RemoteDependencyData")
                   and e["data"]["baseData"]["name"] == "row")  # fmt: skip
    assert dependency["iKey"] == key and request["iKey"] == key
    props = dependency["data"]["baseData"]["properties"]
    assert props["gen_ai.request.model"] == "m" and props["gen_ai.usage.input_tokens"] == "7"
    assert props["llmops.row_id"] == "row-9"
    assert key not in trace_file.read_text() and redaction.redact(connection_string) == "***"


def test_spans_arrive_in_a_real_otlp_backend_with_their_attributes(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT -> Arize Phoenix on loopback (a real OTLP backend): the row and LLM spans, their
    parent link and GenAI attributes, as Phoenix stored them."""
    from otlp_backend import phoenix

    with phoenix(tmp_path / "phoenix") as backend:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": backend.url}
        telemetry = tracing.setup("otlp-test", None, env=env, attributes={"openinference.project.name": "t"})
        assert telemetry.exporters == [f"otlp {backend.url}"]
        tracing.set_attributes(use_case="uc", variant="v1")
        with tracing.row_span("row-3"), tracing.llm_span("row-3", "/r0/v1/completions", BODY) as call:
            call.set(**tracing.response_attributes({"usage": {"prompt_tokens": 11, "completion_tokens": 4},
                                                   "model": "gemma"}))  # fmt: skip
        telemetry.shutdown()
        spans = backend.wait_for("t", 2)
    by_name = {span["name"]: span for span in spans}
    row, call = by_name["row"], by_name["text_completion m"]
    assert call["parent_id"] == row["context"]["span_id"] and call["context"]["trace_id"] == row["context"]["trace_id"]
    assert row["attributes"]["llmops.row_id"] == "row-3" and row["attributes"]["llmops.variant"] == "v1"
    a = call["attributes"]
    assert (a["gen_ai.request.model"], a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == ("m", 11, 4)
    assert call["span_kind"] == "LLM"  # Phoenix read the GenAI conventions


class _MetricsReceiver(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        type(self).received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_metrics_reach_the_otlp_endpoint() -> None:
    """The endpoint's request and guardrail counters, decoded from the OTLP/HTTP requests at the receiver."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    _MetricsReceiver.received = []
    with http_server(_MetricsReceiver) as port:
        telemetry = tracing.setup("m", None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
        tracing.record_request({"llmops.deployment": "blue"}, 0.25, 200)
        tracing.count("guardrail", {"llmops.deployment": "blue", "check": "prompt_injection"})
        telemetry.shutdown()
    names: dict[str, list] = {}
    for body in _MetricsReceiver.received:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    names.setdefault(metric.name, []).append(metric)
    assert {"llmops.requests", "llmops.request.duration", "llmops.guardrail"} <= set(names)
    [counter] = names["llmops.guardrail"][0].sum.data_points
    assert counter.as_int == 1 and {kv.key: kv.value.string_value for kv in counter.attributes}["check"] == (
        "prompt_injection"
    )
