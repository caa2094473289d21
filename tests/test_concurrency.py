"""Bulk runs execute rows concurrently, per connection (`concurrency` in conf/llm): every flow kind overlaps its
LLM requests up to the limit and never beyond, outputs keep the input order, and row timeouts still hold.
Overlap is read from the stub's request log (how many requests it was answering when each arrived), not from
wall-clock timings."""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, StubLLM, post_json

from stages import engine
from stages.engine.promptflow import flows as engine_flows
from stages.engine.promptflow import hooks as engine_hooks
from stages.llm import connections, endpoint, llm_proxy
from stages.llm.connections import Connection
from stages.results import bulk

RETRY = llm_proxy.RetryPolicy(attempts=2, base_s=0.01, max_s=1)
Inputs = Callable[[int], dict[str, Any]]
# Flow kind: folder, binding, the inputs of row i (each row's prompt holds "number <i>").
KINDS: dict[str, tuple[str, dict[str, Any], Inputs]] = {
    "dag": ("use_cases/web_classification/flows/classify", {"node": "classify", "prompt": "classify_v1.jinja2"},
            lambda i: {"url": f"https://example.org/{i}", "text": f"Page number {i}."}),
    "prompty": ("use_cases/general_qa/flows/answer", {"prompt": "answer.prompty"},
                lambda i: {"question": f"What is number {i}?"}),
    "flex_class": ("use_cases/chat/flows/assistant", {"prompt": "assistant.prompty", "params": {"max_tokens": 8}},
                   lambda i: {"question": f"What is number {i}?", "chat_history": []}),
    "flex_function": ("use_cases/code_generation/flows/generate",
                      {"prompt": "generate_v2.prompty", "params": {"temperature": 0, "max_tokens": 20}},
                      lambda i: {"task": f"Return number {i}.", "signature": f"def f{i}():"}),
}  # fmt: skip


def local(stub: StubLLM, concurrency: int = 1) -> Connection:
    return Connection("local", "openai", "completion", "m", stub.base_url, "sk-test-key", request_timeout_s=10,
                      concurrency=concurrency)  # fmt: skip


def session_for(kind: str, connection: Connection, row_timeout_s: float | None = None) -> engine.FlowSession:
    folder, binding, _ = KINDS[kind]
    return engine.FlowSession(REPO / folder, engine.LLMBinding(connection, **binding), row_timeout_s=row_timeout_s)


def rows_of(kind: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"r{i}", KINDS[kind][2](i)) for i in range(count)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_rows_overlap_up_to_the_concurrency_and_never_beyond(stub_llm: StubLLM, tmp_path: Path, kind: str) -> None:
    stub_llm.faults(delay_s=1.0)
    streams = sys.stdout, sys.stderr
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=10, row_of=engine.row_of_request) as proxy:
        session = session_for(kind, proxy.connection(local(stub_llm)))
        rows = rows_of(kind, 8)
        results, usage = [], {}
        for result in session.run_rows(rows, concurrency=4):
            results.append(result)
            usage[result.row_id] = proxy.row_usage(result.row_id)
    assert [r.error for r in results] == [None] * 8
    assert sorted(r.row_id for r in results) == sorted(row_id for row_id, _ in rows)
    requests = stub_llm.requests()
    assert len(requests) == 8 and max(r["in_flight"] for r in requests) == 4  # 4 at once, never 5
    assert all(u.requests == 1 and u.misses == 1 for u in usage.values())  # each row's request is its own
    assert (sys.stdout, sys.stderr) == streams  # prompt flow's log writers are gone after the run


def test_concurrency_1_runs_the_rows_one_after_the_other_in_order(stub_llm: StubLLM) -> None:
    stub_llm.faults(delay_s=0.2)
    session = session_for("prompty", local(stub_llm))
    rows = rows_of("prompty", 4)
    results = list(session.run_rows(rows, concurrency=1))
    assert [r.row_id for r in results] == ["r0", "r1", "r2", "r3"]
    requests = stub_llm.requests()
    assert [r["in_flight"] for r in requests] == [1, 1, 1, 1]
    assert [r["body"]["prompt"].count(f"number {i}?") for i, r in enumerate(requests)] == [1, 1, 1, 1]


def test_the_run_stage_writes_outputs_in_input_order_whatever_order_rows_finish(
    stub_llm: StubLLM, tmp_path: Path
) -> None:
    stub_llm.faults(delay_s=1.5, match="number 0?")  # the first row finishes last
    use_case = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"]["general_qa"]
    rows = [{"row_id": f"q{i}", "question": f"What is number {i}?"} for i in range(6)]
    with llm_proxy.LLMProxy(stub_llm.base_url, llm_proxy.CacheStore(tmp_path / "cache"), RETRY, timeout_s=10,
                            row_of=engine.row_of_request) as proxy:  # fmt: skip
        connection = proxy.connection(local(stub_llm, concurrency=3))
        results, records, summary = bulk.run_variant(
            REPO, "general_qa", use_case, "v1", "v1", proxy, connection, rows, row_timeout_s=30, k=1, price=None
        )
    received = [r["body"]["prompt"].rsplit("number ", 1)[1][0] for r in stub_llm.requests()]
    assert received[:3] != ["0"] * 3 and sorted(received) == ["0", "1", "2", "3", "4", "5"]
    assert [r["row_id"] for r in records] == [f"q{i}" for i in range(6)]
    assert [r.row_id for r in results] == [f"q{i}" for i in range(6)]
    assert all(r["error"] is None and r["llm"]["requests"] == 1 for r in records)
    assert summary["rows"] == 6 and summary["errors"] == 0 and summary["cache"]["misses"] == 6


def test_a_row_past_its_timeout_is_recorded_while_the_others_run_on(stub_llm: StubLLM) -> None:
    stub_llm.faults(delay_s=60, match="number 1?")
    session = session_for("prompty", local(stub_llm), row_timeout_s=1)
    results = {r.row_id: r for r in session.run_rows(rows_of("prompty", 6), concurrency=3)}
    assert results["r1"].error == "row timed out after 1 s" and results["r1"].latency_s >= 1.0
    assert all(results[f"r{i}"].error is None for i in (0, 2, 3, 4, 5))
    assert stub_llm.in_flight() >= 1  # the run ended while the slow answer (60 s) was still being held back


def test_in_input_order_needs_each_row_once() -> None:
    def result(row_id: str) -> engine.RowResult:
        return engine.RowResult(row_id, {}, None, 0.1)

    ordered = engine.in_input_order([result("b"), result("c"), result("a")], ["a", "b", "c"])
    assert [r.row_id for r in ordered] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="'a' appears twice"):
        engine.in_input_order([result("a"), result("a")], ["a", "b"])
    with pytest.raises(ValueError, match="got 1 results for 2 rows"):
        engine.in_input_order([result("a")], ["a", "b"])


@pytest.mark.parametrize("value", [0, -2, "4", True, 1.5])
def test_a_bad_concurrency_names_the_key_and_the_file(value: object) -> None:
    llm = {"name": "openai", "type": "openai", "api": "chat", "model": "m", "base_url": "https://x/v1",
           "api_key_env": "K", "concurrency": value}  # fmt: skip
    with pytest.raises(connections.ConnectionConfigError, match=r"llm\.concurrency must be .*conf/llm/openai\.yaml"):
        connections.resolve(llm, {"K": "key"})


def test_every_connection_declares_its_concurrency() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["llm"]["concurrency"] == 1  # llama.cpp answers one request at a time
    for name in ("openai", "azure_openai"):
        assert yaml.safe_load((REPO / "conf/llm" / f"{name}.yaml").read_text())["concurrency"] > 1


def test_the_default_tls_context_is_built_once_for_all_the_llm_clients(stub_llm: StubLLM) -> None:
    import openai

    session_for("prompty", local(stub_llm))  # a session shares the context (a prompty makes a client per request)
    first, second = (openai.OpenAI(api_key="k", base_url=stub_llm.base_url) for _ in range(2))
    assert first._client._transport._pool._ssl_context is second._client._transport._pool._ssl_context
    custom = openai.OpenAI(api_key="k", base_url=stub_llm.base_url, http_client=openai.DefaultHttpxClient(verify=False))
    assert custom._client._transport._pool._ssl_context is not first._client._transport._pool._ssl_context


def test_the_same_request_from_rows_running_at_once_reaches_the_llm_once(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(delay_s=0.5)
    body = {"model": "m", "prompt": "Q: same?\nA:", "max_tokens": 3, "temperature": 0}
    other = {**body, "prompt": "Q: other?\nA:"}
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=10) as proxy, ThreadPoolExecutor(4) as pool:
        url = f"{proxy.base_url()}/completions"
        answers = list(pool.map(lambda b: post_json(url, b), [body, body, body, other]))
    assert [status for status, _, _ in answers] == [200] * 4
    assert answers[0][2]["choices"] == answers[1][2]["choices"] == answers[2][2]["choices"]
    assert sorted(r["body"]["prompt"] for r in stub_llm.requests()) == ["Q: other?\nA:", "Q: same?\nA:"]
    assert max(r["in_flight"] for r in stub_llm.requests()) == 2  # distinct requests still overlap
    assert (proxy.total.misses, proxy.total.hits) == (2, 2)


def test_evaluate_gives_the_same_rows_and_metrics_at_any_concurrency() -> None:
    from stages.results import evaluation

    use_case = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"]["general_qa"]
    prepared = [{"row_id": f"q{i}", "question": f"Q{i}?", "answer": f"A{i % 3}", "aliases": []} for i in range(12)]
    run_rows = [{"row_id": f"q{i}", "outputs": {"output": f"A{i % 2}"}, "error": None, "latency_s": 0.1}
                for i in range(12)]  # fmt: skip
    session = engine.FlowSession(REPO / use_case["eval_flow"])
    outcomes = [evaluation.evaluate_variant([session], "general_qa", "v1", use_case, prepared, run_rows,
                                                concurrency=c) for c in (1, 4)]  # fmt: skip
    (rows_1, metrics_1, failed_1), (rows_4, metrics_4, failed_4) = outcomes
    assert [r["row_id"] for r in rows_4] == [f"q{i}" for i in range(12)]
    assert rows_4 == rows_1 and metrics_4 == metrics_1 and failed_1 == failed_4 == []
    assert metrics_1["rows"] == 12 and [r["eval"]["exact"] for r in rows_1[:4]] == [True, True, False, False]


def _row_workers() -> list[Any]:
    import multiprocessing

    return [child for child in multiprocessing.active_children() if child.name.startswith("rows-")]


@pytest.mark.parametrize("kind", ["dag", "flex_class"])
def test_rows_spread_over_worker_processes_share_the_concurrency(stub_llm: StubLLM, tmp_path: Path, kind: str) -> None:
    stub_llm.faults(delay_s=1.0)
    rows = rows_of(kind, 8)
    with llm_proxy.LLMProxy(stub_llm.base_url, llm_proxy.CacheStore(tmp_path / "cache"), RETRY, timeout_s=10,
                            row_of=engine.row_of_request) as proxy:  # fmt: skip
        session = session_for(kind, proxy.connection(local(stub_llm)))
        alone = {r.row_id: r.outputs for r in session.run_rows(rows[:2], concurrency=1)}  # answers to compare with
        results, workers_seen, usage = [], 0, {}
        for result in session.run_rows(rows, concurrency=4, processes=2):
            workers_seen = max(workers_seen, len(_row_workers()))
            results.append(result)
            usage[result.row_id] = proxy.row_usage(result.row_id)
    assert workers_seen == 2 and _row_workers() == []  # two worker processes, ended with the run
    assert sorted(r.row_id for r in results) == sorted(row_id for row_id, _ in rows)
    assert all(r.error is None for r in results)
    assert {r.row_id: r.outputs for r in results if r.row_id in alone} == alone  # same flow, same answers
    later = stub_llm.requests()[2:]  # the 8 rows' requests, after the 2 answered alone (cached since)
    assert len(later) == 6 and max(r["in_flight"] for r in later) <= 4  # 4 at once over both workers, never 5
    # requests made in the workers count against their rows (r0 and r1 also made one in the first run)
    expected = {"r0": (1, 1), "r1": (1, 1)} | {f"r{i}": (1, 0) for i in range(2, 8)}
    assert {row_id: (u.misses, u.hits) for row_id, u in usage.items()} == expected


def test_a_worker_process_that_dies_fails_the_run_and_ends_the_others(stub_llm: StubLLM) -> None:
    import os
    import signal

    stub_llm.faults(delay_s=0.5)
    session = session_for("prompty", local(stub_llm))
    rows = session.run_rows(rows_of("prompty", 40), concurrency=2, processes=2)
    next(rows)
    os.kill(_row_workers()[0].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"worker process rows-\d died \(exit code -9\)"):
        list(rows)
    assert _row_workers() == []


def test_a_consumer_that_stops_early_ends_the_worker_processes(stub_llm: StubLLM) -> None:
    session = session_for("prompty", local(stub_llm))
    rows = session.run_rows(rows_of("prompty", 50), concurrency=4, processes=2)
    assert next(rows).error is None
    rows.close()
    assert _row_workers() == []


def test_the_proxy_keeps_its_connection_to_the_endpoint_alive(stub_llm: StubLLM, tmp_path: Path, monkeypatch) -> None:
    body = {"model": "m", "prompt": "Q: {}?\nA:", "max_tokens": 3, "temperature": 0}
    with llm_proxy.LLMProxy(stub_llm.base_url, None, RETRY, timeout_s=10) as proxy:
        url = f"{proxy.base_url()}/completions"
        for i in range(4):
            assert post_json(url, {**body, "prompt": f"Q: {i}?\nA:"})[0] == 200
        monkeypatch.setattr(endpoint, "KEEP_IDLE_S", 0.0)  # an idle connection is no longer reused
        assert post_json(url, {**body, "prompt": "Q: last?\nA:"})[0] == 200
    ports = [r["client_port"] for r in stub_llm.requests()]
    assert len(ports) == 5 and len(set(ports[:4])) == 1 and ports[4] != ports[0]


def test_rows_of_a_prompty_share_one_llm_client_and_its_connections(stub_llm: StubLLM, tmp_path: Path) -> None:
    from promptflow.core import _flow

    session = session_for("prompty", local(stub_llm))
    assert [r.error for r in session.run_rows(rows_of("prompty", 4), concurrency=1)] == [None] * 4
    ports = [r["client_port"] for r in stub_llm.requests()]
    assert len(ports) == 4 and len(set(ports)) == 1  # one kept-alive connection, not one per request
    config = _flow.convert_model_configuration_to_connection
    same = [_flow.get_open_ai_client_by_connection(config(engine_flows.model_config_object(local(stub_llm))))
            for _ in range(2)]  # fmt: skip
    other_key = dataclasses.replace(local(stub_llm), api_key="sk-other-key")
    other = _flow.get_open_ai_client_by_connection(config(engine_flows.model_config_object(other_key)))
    assert same[0] is same[1] and other is not same[0]


@pytest.mark.parametrize("kind", ["dag", "prompty"])
def test_llm_requests_to_a_proxy_in_the_same_process_skip_http(
    stub_llm: StubLLM, tmp_path: Path, kind: str, monkeypatch
) -> None:
    threads: list[str] = []
    handle = llm_proxy.LLMProxy.handle

    def recording(self: llm_proxy.LLMProxy, *args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return handle(self, *args)

    monkeypatch.setattr(llm_proxy.LLMProxy, "handle", recording)
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=10, row_of=engine.row_of_request) as proxy:
        session = session_for(kind, proxy.connection(local(stub_llm)))
        first = {r.row_id: r.outputs for r in session.run_rows(rows_of(kind, 3), concurrency=3)}
        again = {r.row_id: r.outputs for r in session.run_rows(rows_of(kind, 3), concurrency=3)}
        assert [proxy.row_usage(f"r{i}").hits for i in range(3)] == [1, 1, 1]  # the second pass, from the cache
        over_http = post_json(f"{proxy.base_url()}/completions", {"model": "m", "prompt": "Q: x?", "max_tokens": 2})
    assert first == again and all(first.values()) and over_http[0] == 200
    assert proxy.totals().misses == 4 and proxy.totals().hits == 3 and len(stub_llm.requests()) == 4
    # the rows' requests were answered in the threads that ran them; the plain HTTP client's in the server's, which
    # socketserver names after its target
    served = ["process_request_thread" in name for name in threads]
    assert served == [False] * 6 + [True]


def test_a_prompt_template_compiled_once_renders_as_prompt_flow_renders_it() -> None:
    from promptflow.core import _prompty_utils, _utils
    from promptflow.exceptions import UserErrorException

    engine_hooks._cache_prompt_templates()
    cached, original = _prompty_utils.render_jinja_template_content, _utils.render_jinja_template_content
    assert cached is not original
    template = "system:\n{% for s in shots %}Q: {{ s }}\n{% endfor %}\nuser:\n{{ question }}\n"
    for inputs in ({"shots": ["a", "b"], "question": "c?"}, {"shots": [], "question": "<b>"}):
        assert cached(template, **inputs) == original(template, **inputs)
    unsafe = "{{ ''.__class__.__mro__ }}"  # the sandbox still refuses what prompt flow's refuses
    for render in (cached, original):
        with pytest.raises(UserErrorException, match="Failed to render jinja template"):
            render(unsafe)


def test_prompt_flow_adds_up_the_token_counts_of_each_llm_call_without_a_warning() -> None:
    """openai 1.x's usage also holds `*_tokens_details` (None from the stub and from llama.cpp): prompt flow's own
    metrics calculator failed on them once per LLM call, with a WARNING in the stage's log. Hooked, it adds up the
    counts and leaves the rest out (tests/test_llm_cache.py checks a run stage's log)."""
    from promptflow.tracing._openai_utils import OpenAIMetricsCalculator

    engine_hooks._sum_token_counts_only()
    warnings: list[str] = []
    logger = type("Logger", (), {"warning": lambda self, message: warnings.append(message)})()
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "completion_tokens_details": None,
             "prompt_tokens_details": {"cached_tokens": 0}}  # fmt: skip
    call = {"type": "LLM", "inputs": {}, "output": {"usage": usage}}
    tree = {**call, "children": [dict(call)]}  # a node's call and the LLM call under it
    counts = {"prompt_tokens": 14, "completion_tokens": 4, "total_tokens": 18}
    assert OpenAIMetricsCalculator(logger).get_openai_metrics_from_api_call(tree) == counts
    assert warnings == []
