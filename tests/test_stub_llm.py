"""The stub LLM the fast tier runs against: deterministic answers, and answers a test scripts."""

from __future__ import annotations

import json
import urllib.request

from conftest import StubLLM


def complete(stub: StubLLM, prompt: str) -> str:
    body = json.dumps({"model": "m", "prompt": prompt}).encode()
    request = urllib.request.Request(f"{stub.base_url}/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["choices"][0]["text"]


def test_scripted_answers_win_over_hashed_ones_and_apply_at_once(stub_llm: StubLLM) -> None:
    hashed = complete(stub_llm, "Question: 2+2?\nAnswer:")
    assert hashed == complete(stub_llm, "Question: 2+2?\nAnswer:")  # same prompt, same answer
    stub_llm.script({"2+2": "4", "Question": "never reached for 2+2"})
    assert complete(stub_llm, "Question: 2+2?\nAnswer:") == " 4"
    assert complete(stub_llm, "Question: 3+3?\nAnswer:") == " never reached for 2+2"
    assert len(stub_llm.requests()) == 4
