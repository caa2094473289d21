"""The stub LLM the fast tier runs against: deterministic answers, and answers a test scripts."""

from __future__ import annotations

import json
import re
import sys
import urllib.request

from conftest import STUB_LLM, StubLLM, post_json, start_process, stop_process


def complete(stub: StubLLM, prompt: str) -> str:
    body = json.dumps({"model": "m", "prompt": prompt}).encode()
    request = urllib.request.Request(f"{stub.base_url}/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["choices"][0]["text"]


def test_scripted_answers_win_over_hashed_ones_and_apply_at_once(stub_llm: StubLLM) -> None:
    hashed = complete(stub_llm, "Question: 2+2?\nAnswer:")
    assert hashed == complete(stub_llm, "Question: 2+2?\nAnswer:")  # same prompt, same answer
    stub_llm.script({"2+2": "4", "Question": "never reached for 2+2"})
    assert complete(stub_llm, "Question: 2+2?\nAnswer:") == "4"  # scripted answers are verbatim
    assert complete(stub_llm, "Question: 3+3?\nAnswer:") == "never reached for 2+2"
    assert len(stub_llm.requests()) == 4


def test_fault_options_on_the_command_line() -> None:
    command = [sys.executable, str(STUB_LLM), "--port", "0", "--fail-first", "1", "--status", "429",
               "--retry-after", "2", "--match", "boom"]  # fmt: skip
    process, port = start_process(command, re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1"))
    try:
        url = f"http://127.0.0.1:{port}/v1/completions"
        status, headers, body = post_json(url, {"model": "m", "prompt": "boom"})
        assert status == 429 and headers["Retry-After"] == "2" and body["error"]["type"] == "stub_fault"
        assert post_json(url, {"model": "m", "prompt": "fine"})[0] == 200  # does not match
        assert post_json(url, {"model": "m", "prompt": "boom"})[0] == 200  # only the first matching one fails
    finally:
        stop_process(process)


def test_fail_rate_always_fails_the_same_share_of_prompts(stub_llm: StubLLM) -> None:
    stub_llm.faults(fail_rate=0.5, status=503)
    url = f"{stub_llm.base_url}/completions"
    statuses = [post_json(url, {"model": "m", "prompt": f"prompt {i}"})[0] for i in range(40)]
    assert statuses == [post_json(url, {"model": "m", "prompt": f"prompt {i}"})[0] for i in range(40)]
    assert 10 < statuses.count(503) < 30 and set(statuses) == {200, 503}
    stub_llm.faults()
    assert {post_json(url, {"model": "m", "prompt": f"prompt {i}"})[0] for i in range(40)} == {200}
    assert [r["fault"] for r in stub_llm.requests()[:40]].count(503) == statuses.count(503)
