"""Faults between the flows and the LLM: 429s with Retry-After, 5xx, slow answers and dropped connections, injected
by the stub and handled by the LLM proxy (retries with backoff) and the flow engine (per-row timeout)."""

from __future__ import annotations

import email.utils
import itertools
import json
import time
from pathlib import Path

import pytest
from conftest import REPO, Project, StubLLM, post_json

from stages import engine
from stages.llm import llm_proxy, upstream
from stages.llm.connections import Connection
from stages.results import bulk

BODY = {"model": "m", "prompt": "Question: 2+2?\nAnswer:", "max_tokens": 3, "temperature": 0}
FAST = llm_proxy.RetryPolicy(attempts=4, base_s=0.01, max_s=5)


def proxy_for(stub: StubLLM, tmp_path: Path, retry: llm_proxy.RetryPolicy = FAST, **options) -> llm_proxy.LLMProxy:
    return llm_proxy.LLMProxy(stub.base_url, llm_proxy.CacheStore(tmp_path / "cache"), retry, **{"timeout_s": 5,
                              **options})  # fmt: skip


def cached_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("*.json"))


def test_429_with_retry_after_is_retried_after_the_wait_it_asks_for(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=2, status=429, retry_after=1)
    with proxy_for(stub_llm, tmp_path) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == 200 and answer["choices"][0]["text"]
    arrived = [r["received"] for r in stub_llm.requests()]
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(arrived))  # not the 0.01 s backoff
    assert [r["fault"] for r in stub_llm.requests()] == [429, 429, None]
    assert (proxy.total.upstream, proxy.total.retries, proxy.total.errors, proxy.total.misses) == (3, 2, 0, 1)
    assert len(cached_files(tmp_path)) == 1


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert upstream.retry_after_s("1.5") == 1.5 and upstream.retry_after_s(None) is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < upstream.retry_after_s(in_a_minute) <= 60
    assert upstream.retry_after_s("soon") is None


def test_5xx_is_retried_with_exponential_backoff_and_full_jitter(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=3, status=503)
    waits: list[float] = []
    retry = llm_proxy.RetryPolicy(attempts=5, base_s=0.2, max_s=0.5)
    with proxy_for(stub_llm, tmp_path, retry, sleep=waits.append, seed=1) as proxy:
        status, _, _ = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == 200 and len(stub_llm.requests()) == 4
    # Each wait is drawn from [0, min(max_s, base_s * 2**n)].
    assert len(waits) == 3 and all(0 <= wait <= bound for wait, bound in zip(waits, (0.2, 0.4, 0.5), strict=True))
    assert len(set(waits)) == 3  # jittered, not a fixed schedule


def test_dropped_connections_are_retried(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=2, drop=True)
    with proxy_for(stub_llm, tmp_path) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == 200 and answer["object"] == "text_completion"
    assert [r["fault"] for r in stub_llm.requests()] == ["drop", "drop", None]
    assert proxy.total.retries == 2 and proxy.total.errors == 0


def test_slow_answers_time_out_and_the_last_failure_is_reported_and_not_cached(
    stub_llm: StubLLM, tmp_path: Path
) -> None:
    stub_llm.faults(delay_s=60)
    retry = llm_proxy.RetryPolicy(attempts=2, base_s=0.01, max_s=1)
    with proxy_for(stub_llm, tmp_path, retry, timeout_s=0.3) as proxy:
        status, headers, answer = post_json(f"{proxy.base_url()}/completions", BODY)
        assert stub_llm.in_flight() == 2  # both attempts gave up while their answers were still held back
    assert status == llm_proxy.GIVE_UP_STATUS and headers["x-should-retry"] == "false"
    assert "failed after 2 attempt(s)" in answer["error"]["message"]
    assert "timed out" in answer["error"]["message"]
    assert len(stub_llm.requests()) == 2 and proxy.total.errors == 1
    assert cached_files(tmp_path) == []


def test_a_retry_after_longer_than_max_s_ends_the_retries_at_once(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=5, status=429, retry_after=120)
    with proxy_for(stub_llm, tmp_path) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == llm_proxy.GIVE_UP_STATUS and len(stub_llm.requests()) == 1
    assert (
        "HTTP 429" in answer["error"]["message"]
        and "Retry-After 120 s is above retry.max_s 5 s" in (answer["error"]["message"])
    )


def test_errors_that_a_retry_cannot_fix_pass_through_at_once(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=1, status=400)
    with proxy_for(stub_llm, tmp_path) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == 400 and answer["error"]["type"] == "stub_fault"
    assert len(stub_llm.requests()) == 1 and proxy.total.retries == 0 and proxy.total.errors == 1
    assert cached_files(tmp_path) == []


def local(stub_or_url: str) -> Connection:
    return Connection("local", "openai", "completion", "m", stub_or_url, "sk-test-key", request_timeout_s=5)


@pytest.mark.parametrize("kind", ["dag", "prompty"])
def test_a_row_that_still_fails_is_recorded_with_its_error_and_the_run_goes_on(
    stub_llm: StubLLM, tmp_path: Path, kind: str
) -> None:
    stub_llm.faults(fail_first=100, status=500, match="Eiffel")
    retry = llm_proxy.RetryPolicy(attempts=2, base_s=0.01, max_s=1)
    with proxy_for(stub_llm, tmp_path, retry) as proxy:
        connection = proxy.connection(local(stub_llm.base_url))
        if kind == "dag":
            binding = engine.LLMBinding(connection, node="classify", prompt="classify_v1.jinja2")
            session = engine.FlowSession(REPO / "use_cases/web_classification/flows/classify", binding)
            rows = [(f"r{i}", {"url": f"https://example.org/{i}", "text": text}) for i, text in
                    enumerate(["Lentil soup recipe", "The Eiffel tower at night", "Football results"])]  # fmt: skip
        else:
            binding = engine.LLMBinding(connection, prompt="answer.prompty")
            session = engine.FlowSession(REPO / "use_cases/general_qa/flows/answer", binding)
            rows = [(f"r{i}", {"question": q}) for i, q in
                    enumerate(["Capital of Italy?", "How tall is the Eiffel tower?", "Who wrote Hamlet?"])]  # fmt: skip
        results = list(session.run_rows(rows))
    assert [r.error is None for r in results] == [True, False, True]
    assert "424" in results[1].error and "failed after 2 attempt(s): HTTP 500" in results[1].error
    assert "sk-test-key" not in results[1].error
    # Prompt flow did not retry the proxy's final answer: the endpoint saw 2 attempts for the failing row.
    failing = [r for r in stub_llm.requests() if "Eiffel" in r["body"]["prompt"]]
    assert len(failing) == 2 and len(stub_llm.requests()) == 4
    assert len(cached_files(tmp_path)) == 2  # the two answers, never the error


def test_a_row_past_its_timeout_is_recorded_and_the_run_goes_on(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(delay_s=60, match="Hamlet")
    with proxy_for(stub_llm, tmp_path) as proxy:
        binding = engine.LLMBinding(proxy.connection(local(stub_llm.base_url)), prompt="answer.prompty")
        session = engine.FlowSession(REPO / "use_cases/general_qa/flows/answer", binding, row_timeout_s=1)
        rows = [("a", {"question": "Capital of Italy?"}), ("b", {"question": "Who wrote Hamlet?"}),
                ("c", {"question": "Largest ocean?"})]  # fmt: skip
        results = list(session.run_rows(rows))
        assert stub_llm.in_flight() >= 1  # the run did not wait for the slow answer: it is still held back
    assert [r.error for r in results] == [None, "row timed out after 1 s", None]
    assert results[1].latency_s >= 1.0


def test_the_error_report_names_the_use_case_the_rate_and_the_first_errors() -> None:
    def rows(failed: int, total: int) -> list[engine.RowResult]:
        return [engine.RowResult(f"r{i}", None if i < failed else {}, "boom" if i < failed else None, 0.1)
                for i in range(total)]  # fmt: skip

    assert bulk.error_report("uc", rows(0, 10), 0.1) is None
    assert bulk.error_report("uc", rows(1, 10), 0.1) is None  # 10% is not above 10%
    report = bulk.error_report("uc", rows(2, 10), 0.1)
    assert report and report.startswith("run uc: 2 of 10 rows failed (20.0%, above bulk.max_error_rate 10.0%)")
    assert report.endswith("First errors:\n  r0: boom\n  r1: boom")
    assert bulk.error_report("uc", rows(1, 1), 1.0)  # every row failed: always a failure


def test_the_run_stage_fails_past_the_error_rate_with_a_summary_and_a_rerun_resumes(
    project: Project, stub_llm: StubLLM
) -> None:
    uc = "web_classification"
    project.params("llm.retry.attempts=2", "llm.retry.base_s=0.01")
    stub_llm.faults(fail_rate=0.3, status=500)  # always the same ~30% of the prompts
    result = project.sh("dvc", "repro", f"run@{uc}", check=False)
    assert result.returncode != 0
    run = project.root / "data" / uc / "run"
    rows = [json.loads(line) for line in (run / "outputs" / "v1.jsonl").read_text().splitlines()]
    failed = [row for row in rows if row["error"]]
    assert len(rows) == 72 and 0.1 < len(failed) / 72 < 0.6
    assert all("HTTP 500" in row["error"] and row["outputs"] is None for row in failed)
    rate = f"{len(failed) / 72:.1%}"
    summary = f"run {uc} v1: {len(failed)} of 72 rows failed ({rate}, above bulk.max_error_rate 10.0%)"
    assert summary in result.stderr and f"  {failed[0]['row_id']}: " in result.stderr
    assert len(list((run / "llm_cache").rglob("*.json"))) == 72 - len(failed)  # answers kept, errors not

    before = len(stub_llm.requests())
    stub_llm.faults()
    project.sh("dvc", "repro", f"run@{uc}")
    assert len(stub_llm.requests()) - before == len(failed)  # only the rows that failed are asked again
    rows = [json.loads(line) for line in (run / "outputs" / "v1.jsonl").read_text().splitlines()]
    assert all(row["error"] is None for row in rows)
    operations = json.loads((run / "operations.json").read_text())
    assert operations["cache"] == {"hits": 72 - len(failed), "misses": len(failed), "errors": 0}
