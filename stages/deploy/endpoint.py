"""What a deployment does around each scoring request: guardrails, one trace, metrics, and the LLM reached through
an uncached LLM proxy that fails over to the connection's fallbacks.

`conf/deploy/<env>.yaml` configures it per deployment (top level or `use_cases.<uc>`):
    observability:
      pii: {enabled: true, redact: [email, phone, card, iban, ip, name]}
      guardrails: {max_input_chars: 4000, prompt_injection: block, content_filter: null}
The deployment server (stages/deploy/server.py) builds an `Endpoint` and calls `score` per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages import engine
from stages.llm import llm_proxy
from stages.llm.connections import Connection
from stages.observability import guardrails, pii, tracing

REQUEST_ID_HEADER = "X-LLMOps-Request-Id"  # the router's request id: the trace and the log line share it
META_HEADER = "X-LLMOps-Meta"  # what the router logs beside an answer (JSON): guardrail flags, LLM usage


@dataclass(frozen=True)
class Observability:
    """A deployment's `observability` block."""

    pii: pii.Redactor = pii.DEFAULT
    guardrails: guardrails.Guardrails = field(default_factory=guardrails.Guardrails)
    trace_content: bool = False  # traces carry prompts and answers (redacted) or only timings, tokens and ids

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "observability") -> Observability:
        block = dict(block or {})
        if unknown := set(block) - {"pii", "guardrails", "traces"}:
            raise ValueError(f"{where}: unknown key {', '.join(sorted(unknown))} (pii, guardrails, traces)")
        traces = dict(block.get("traces") or {})
        if set(traces) - {"content"} or not isinstance(traces.get("content", False), bool):
            raise ValueError(f"{where}.traces: {{content: true|false}}, got {traces!r}")
        return cls(pii.Redactor.from_config(block.get("pii"), f"{where}.pii"),
                   guardrails.Guardrails.from_config(block.get("guardrails"), f"{where}.guardrails"),
                   bool(traces.get("content", False)))  # fmt: skip


def serving_proxy(
    connection: Connection, llm: Mapping[str, Any], env: Mapping[str, str], bridge_chat: bool = False
) -> llm_proxy.LLMProxy:
    """The endpoint's way to its LLM: retries and fallbacks (`llm.fallbacks`), no cache, an LLM span per call
    (`bridge_chat`: a MAF flow's chat requests to a completion-API connection, stages/llm/chat_bridge.py)."""
    return llm_proxy.for_connection(connection, llm, None, engine.row_of_request, env, bridge_chat=bridge_chat)


@dataclass
class Endpoint:
    """One deployment's request handling: guardrails, then the flow in a trace of its own."""

    session: engine.FlowSession
    declared: engine.FlowInterface
    required: set[str]
    observability: Observability
    proxy: llm_proxy.LLMProxy | None = None
    counts: guardrails.Counts = field(default_factory=guardrails.Counts)
    labels: dict[str, str] = field(default_factory=dict)  # deployment, variant, use case

    def score(self, request_id: str, body: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """The status and JSON answer to one request's parsed body, and what the router logs beside it (the
        guardrail's flags, the LLM usage and fallbacks: the `X-LLMOps-Meta` header)."""
        started = time.perf_counter()
        types = {name: kind for name, (kind, _) in self.declared.inputs.items() if kind}
        verdict = self.observability.guardrails.check(body, self.declared.inputs, self.required, types)
        self.counts.add(verdict)
        tracing.count("guardrail", {**self.labels, "check": verdict.check, "flags": ",".join(verdict.flags)})
        if not verdict.allowed:
            tracing.record_request(self.labels, time.perf_counter() - started, verdict.status)
            return verdict.status, {"error": verdict.reason, "guardrail": verdict.check}, {"guardrail": verdict.check}
        result = self.session.run(request_id, body)
        usage = self.proxy.row_usage(request_id) if self.proxy else llm_proxy.Usage()  # this request's calls only
        status = 200 if result.error is None else 500
        tracing.record_request(self.labels, time.perf_counter() - started, status)
        meta = {"llm": usage.as_row(), **({"flags": list(verdict.flags)} if verdict.flags else {})}
        if result.error is not None:
            return 500, {"error": result.error}, meta
        return 200, dict(result.outputs or {}), meta

    def health(self) -> dict[str, Any]:
        fallbacks = {name: 0 for name, _, _ in (self.proxy.fallbacks if self.proxy else [])}
        totals = self.proxy.totals() if self.proxy else llm_proxy.Usage()
        return {"guardrails": self.counts.snapshot(), "llm": {**totals.as_metrics(), "fallbacks": totals.fallbacks},
                "fallbacks": list(fallbacks)}  # fmt: skip


def trace_file(runtime: Path, deployment: str) -> Path:
    """Where a local deployment writes its traces (OTLP JSON)."""
    return runtime / "traces" / f"{deployment}.jsonl"
