"""The LLM proxy's API bridges (stages/llm/chat_bridge.py): Responses -> chat -> completion and back, through a
real proxy in front of the stub LLM, and the row tag in proxy URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import StubLLM, post_json

from stages import engine
from stages.llm import chat_bridge, llm_proxy

RESPONSES_REQUEST = {
    "model": "dep1",
    "stream": False,
    "include": ["reasoning.encrypted_content"],
    "instructions": "Be brief.",
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi"}]}],
    "max_output_tokens": 5,
    "temperature": 0.0,
}  # fmt: skip  (what MAF's OpenAIChatClient sent, recorded)


def test_responses_request_becomes_chat_then_completion() -> None:
    route, request, backs = chat_bridge.translate("/v1/openai/v1/responses", RESPONSES_REQUEST, completion_only=True)
    assert route == "/v1/completions"
    prompt = "system:\nBe brief.\n\nuser:\nSay hi\n\nassistant:\n"
    assert request == {"model": "dep1", "temperature": 0.0, "max_tokens": 5, "prompt": prompt, "stop": ["\nuser:"]}
    answer = {"id": "c1", "created": 7, "model": "m", "choices": [{"index": 0, "text": " Hi", "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}  # fmt: skip
    for back in backs:
        answer = back(answer)
    assert answer["object"] == "response" and answer["status"] == "completed"
    assert answer["output"][0]["content"][0] == {"type": "output_text", "text": " Hi", "annotations": []}
    assert answer["usage"]["input_tokens"] == 9 and answer["usage"]["output_tokens"] == 2


def test_a_lone_user_message_is_the_completion_prompt_verbatim() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "Q: x\nA:"}], "max_completion_tokens": 12,
            "stop": ["\n"], "temperature": 0, "seed": 1}  # fmt: skip
    route, request, _ = chat_bridge.translate("/v1/chat/completions", chat, completion_only=True)
    assert route == "/v1/completions"
    assert request == {"model": "m", "prompt": "Q: x\nA:", "max_tokens": 12, "stop": ["\n"], "temperature": 0,
                       "seed": 1}  # fmt: skip


def test_chat_is_left_alone_for_a_chat_endpoint_and_responses_only_become_chat() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert chat_bridge.translate("/v1/chat/completions", chat, completion_only=False) == (
        "/v1/chat/completions",
        chat,
        [],
    )
    route, request, backs = chat_bridge.translate("/v1/responses", {"model": "m", "input": "hi"}, False)
    assert (route, request, len(backs)) == (
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        1,
    )


@pytest.mark.parametrize(
    ("request_", "named"),
    [({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools"),
     ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "function_call_output"),
     ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
      "input_image")],
)  # fmt: skip
def test_what_cannot_be_translated_is_refused_by_name(request_: dict, named: str) -> None:
    with pytest.raises(chat_bridge.BridgeError, match=named):
        chat_bridge.translate("/v1/responses", request_, completion_only=True)


def test_proxy_serves_the_responses_api_on_a_completion_endpoint(stub_llm: StubLLM, tmp_path: Path) -> None:
    """A Responses request (Azure layout, as MAF's client sends it) reaches the stub's completion endpoint; the
    answer comes back in the Responses shape, from the cache the second time, counted for the row its header names."""
    stub_llm.script({"Say hi": "Hello there"})
    adapter = llm_proxy.RequestAdapter("openai", "gemma", drop_null_params=True, completion_only=True)
    store = llm_proxy.CacheStore(tmp_path / "cache")
    proxy_ = llm_proxy.LLMProxy(stub_llm.base_url, store, llm_proxy.RetryPolicy(), 10, adapter=adapter,
                                row_of=engine.row_of_request)  # fmt: skip
    with proxy_ as proxy:
        url = proxy.base_url(0) + "/openai/v1/responses?api-version=preview"
        headers = {"api-key": "k", "X-LLMOps-Row": "row%201"}  # as the MAF worker names a request's row
        answers = [post_json(url, RESPONSES_REQUEST, headers) for _ in range(2)]
        usage = proxy.row_usage("row 1")
    for status, _, body in answers:
        assert status == 200, body
        assert body["output"][0]["content"][0]["text"] == "Hello there"
    (sent,) = stub_llm.requests()
    assert sent["path"] == "/v1/completions" and "x-llmops-row" not in {h.lower() for h in sent["headers"]}
    assert sent["body"]["prompt"] == "system:\nBe brief.\n\nuser:\nSay hi\n\nassistant:\n"
    assert sent["body"]["model"] == "gemma" and sent["body"]["max_tokens"] == 5
    assert (usage.requests, usage.hits, usage.misses) == (2, 1, 1)
    (entry,) = list((tmp_path / "cache").rglob("*.json"))
    assert json.loads(entry.read_text())["request"]["path"] == "/v1/completions"  # the key is what was sent


def test_proxy_refuses_an_untranslatable_request_with_a_400(stub_llm: StubLLM) -> None:
    with llm_proxy.LLMProxy(stub_llm.base_url, None, llm_proxy.RetryPolicy(), 10) as proxy:
        status, _, body = post_json(proxy.base_url(0) + "/responses", {"model": "m", "input": "x", "tools": [{}]})
    assert status == 400 and "'tools'" in body["error"]["message"]
    assert stub_llm.requests() == []
