"""Failover in the LLM proxy: a connection's fallbacks answer once the primary's retries run out, are never
cached, and are counted and recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import StubLLM, _stub, post_json

from stages.llm import failover, llm_proxy
from stages.observability import otlp_json, tracing

BODY = {"model": "m", "prompt": "Question: 2+2?\nAnswer:", "max_tokens": 3, "temperature": 0, "stop": ["\n"]}
LLM = {"name": "local", "type": "openai", "api": "completion", "model": "m", "base_url": "http://unused/v1",
       "api_key_env": "K", "api_key_required": False, "retry": {"attempts": 2, "base_s": 0.01, "max_s": 1}}  # fmt: skip


def test_the_backup_answers_when_the_primary_keeps_failing_and_nothing_is_cached(
    stub_llm: StubLLM, tmp_path: Path
) -> None:
    stub_llm.faults(fail_rate=1.0, status=503)
    with _stub(tmp_path / "backup") as backup:
        llm = {**LLM, "fallbacks": [{"name": "backup", "base_url_env": "BACKUP"}, {"response": "Sorry."}]}
        store = llm_proxy.CacheStore(tmp_path / "cache")
        proxy = llm_proxy.LLMProxy(stub_llm.base_url, store, llm_proxy.RetryPolicy(2, 0.01, 1), 5)
        proxy.fallbacks = llm_proxy.fallbacks_for(llm, {"BACKUP": backup.base_url})
        telemetry = tracing.setup("t", tmp_path / "t.jsonl", env={})
        with proxy:
            status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
            assert status == 200 and answer["choices"][0]["text"]
            assert len(stub_llm.requests()) == 2 and len(backup.requests()) == 1  # 2 attempts, then the backup
            assert (proxy.total.fallbacks, proxy.total.errors) == (1, 0)
            assert list(store.keys()) == []  # a fallback's answer is not the primary's: never cached
            backup.faults(fail_rate=1.0, status=500)  # both down: the fixed answer, in the request's shape
            status, _, answer = post_json(f"{proxy.base_url()}/chat/completions", {"model": "m", "messages": []})
            assert status == 200 and answer["choices"][0]["message"]["content"] == "Sorry."
        telemetry.shutdown()
    spans = otlp_json.read(tmp_path / "t.jsonl")
    assert [s.attributes["llmops.answered_by"] for s in spans] == ["backup", "fixed-response"]


def test_without_fallbacks_the_give_up_is_passed_on(stub_llm: StubLLM) -> None:
    stub_llm.faults(fail_rate=1.0, status=503)
    with llm_proxy.LLMProxy(stub_llm.base_url, None, llm_proxy.RetryPolicy(2, 0.01, 1), 5) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", BODY)
    assert status == llm_proxy.GIVE_UP_STATUS and "failed after 2 attempt(s)" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("fallbacks", "message"),
    [
        ("backup", "conf/llm/local.yaml: fallbacks: a list of connections"),
        ([{"base_url": "x"}], "fallbacks[0]: a connection needs a name"),
        ([{"response": 3}], "fallbacks[0]: {response: text} takes only a text"),
        ([{"name": "b", "api_key_env": "NOPE", "api_key_required": True}],
         "fallbacks[0] (b): connection 'b': environment variable NOPE is not set"),
    ],
)  # fmt: skip
def test_bad_fallbacks_name_the_file_and_entry(fallbacks: object, message: str) -> None:
    with pytest.raises(failover.FailoverConfigError, match=re.escape(message)):
        failover.parse({**LLM, "fallbacks": fallbacks}, {})
