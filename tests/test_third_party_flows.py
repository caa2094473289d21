"""Flows nobody on this project wrote, in the shapes of prompt flow's examples (tests/fixtures/third_party): null
penalties, flex evaluators taking `model_config`, flows with their own OpenAI clients, requirements.txt, warnings
per row, and no run-time download by tiktoken."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CODE_STAGES, REPO, Project, StubLLM, post_json, ran_stages

from stages import engine
from stages.llm import connections, llm_proxy, upstream
from stages.llm.connections import Connection
from stages.usecases import flow_facts

FIXTURES = REPO / "tests" / "fixtures" / "third_party"
FAST = llm_proxy.RetryPolicy(attempts=5, base_s=0.01, max_s=1)
NULLS = {"model": "m", "prompt": "Entities:", "max_tokens": 3, "presence_penalty": None, "frequency_penalty": None}


def stub_connection(stub: StubLLM, **options: object) -> Connection:
    return Connection("local", "openai", "completion", "gemma-3-270m", stub.base_url, "sk-test-key",
                      request_timeout_s=5, **options)  # fmt: skip


def proxy_for(stub: StubLLM, tmp_path: Path, connection: Connection) -> llm_proxy.LLMProxy:
    return llm_proxy.from_params(connection, {"retry": {"attempts": 5, "base_s": 0.01, "max_s": 1}},
                                 {"enabled": True, "keep_days": 1}, tmp_path / "cache",
                                 row_of=engine.row_of_request)  # fmt: skip


# --- null penalties: never retried when the endpoint says the request is invalid; dropped for `local`


@pytest.mark.parametrize(
    "status,message,deterministic",
    [(500, "argument 4: TypeError: wrong type", True), (500, "Input should be a valid number", True),
     (500, "CUDA out of memory", False), (503, "invalid state: model loading", False), (400, "invalid", False),
     (500, "", False)],
)  # fmt: skip
def test_a_5xx_saying_the_request_is_invalid_is_deterministic(status: int, message: str, deterministic: bool) -> None:
    body = json.dumps({"error": {"message": message, "type": "internal_server_error"}}).encode()
    assert upstream.rejects_request(status, body) is deterministic


def test_a_rejected_null_penalty_is_answered_at_once_naming_the_parameters(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(reject_null_params=True)
    with llm_proxy.LLMProxy(stub_llm.base_url, None, FAST, timeout_s=5) as proxy:
        status, headers, answer = post_json(f"{proxy.base_url()}/completions", NULLS)
    assert status == 424 and headers["x-should-retry"] == "false"
    message = answer["error"]["message"]
    assert "argument 4: TypeError: wrong type" in message and "not retried" in message
    assert "null for frequency_penalty, presence_penalty" in message and "drop_null_params: true" in message
    assert len(stub_llm.requests()) == 1 and proxy.total.retries == 0 and proxy.total.upstream == 1


def test_local_drops_null_parameters_from_the_request_not_from_its_key(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(reject_null_params=True)
    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm, drop_null_params=True)) as proxy:
        status, _, _ = post_json(f"{proxy.base_url()}/completions", NULLS)
        again, _, _ = post_json(f"{proxy.base_url()}/completions", NULLS)
    sent = stub_llm.requests()
    assert status == again == 200 and len(sent) == 1 and proxy.total.hits == 1
    # The key is that of the request as the flow made it (with model), so entries made before the drop still hit.
    [entry] = (tmp_path / "cache").rglob("*.json")
    assert entry.stem == llm_proxy.cache_key("/v1/completions", {**NULLS, "model": "gemma-3-270m"}, 0)
    assert "presence_penalty" not in sent[0]["body"] and "frequency_penalty" not in sent[0]["body"]
    assert sent[0]["body"]["model"] == "gemma-3-270m"  # completion requests go to the connection's model


def test_conf_local_drops_null_params() -> None:
    import yaml

    assert yaml.safe_load((REPO / "conf/llm/local.yaml").read_text())["drop_null_params"] is True
    assert yaml.safe_load((REPO / "params.yaml").read_text())["llm"]["drop_null_params"] is True


@pytest.mark.parametrize("drop", [True, False])
def test_a_third_party_llm_node_runs_on_an_endpoint_that_rejects_null_penalties(
    stub_llm: StubLLM, tmp_path: Path, drop: bool
) -> None:
    engine.configure(tmp_path / "runtime")
    stub_llm.faults(reject_null_params=True)
    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm, drop_null_params=drop)) as proxy:
        binding = engine.LLMBinding(proxy.connection(stub_connection(stub_llm)), node="NER_LLM")
        session = engine.FlowSession(FIXTURES / "entities", binding)
        rows = [(f"r{i}", {"text": t, "entity_type": "job title"}) for i, t in enumerate(["A chef.", "A pilot."])]
        results = list(session.run_rows(rows))
    if drop:
        assert [r.error for r in results] == [None, None]
        assert all(isinstance(r.outputs["entities"], list) for r in results)
    else:  # one request per row, no retries by the proxy or by prompt flow, and the error names the parameters
        assert all("presence_penalty" in r.error and "drop_null_params" in r.error for r in results)
        assert len(stub_llm.requests()) == 2 and proxy.total.retries == 0
    sent = stub_llm.requests()[0]
    assert sent["path"] == "/v1/completions"  # the chat node runs on the connection's completion API


def test_a_chat_node_without_max_tokens_run_on_the_completion_api_gets_the_connections_default() -> None:
    """Prompt flow's completion tool defaults max_tokens to 16, its chat tool to no limit: a chat node bound to a
    completion-API connection (the embedded model) would have every answer cut at 16 tokens."""
    local = connections.resolve({"name": "local", "type": "openai", "api": "completion", "model": "gemma",
                                 "base_url": "http://127.0.0.1:9/v1", "api_key_env": "K", "api_key_required": False,
                                 "default_max_tokens": 256}, {})  # fmt: skip
    chat = {"name": "ask", "type": "llm", "api": "chat", "inputs": {"question": "${inputs.q}"}}
    dag = {"nodes": [chat, {**chat, "name": "bounded", "inputs": {"max_tokens": 40}},
                     {**chat, "name": "completion", "api": "completion"}]}  # fmt: skip
    bound = engine.all_llm_bindings(Path("."), dag, [engine.LLMBinding(connection=local, node="ask")])
    assert {b.node: dict(b.params) for b in bound} == {"ask": {"max_tokens": 256}, "bounded": {}, "completion": {}}
    with_params = engine.LLMBinding(connection=local, node="ask", params={"max_tokens": 8})
    assert dict(engine.all_llm_bindings(Path("."), dag, [with_params])[0].params) == {"max_tokens": 8}
    on_chat = dataclasses.replace(local, api="chat")  # the chat tool: as the node says
    chat_bound = engine.all_llm_bindings(Path("."), dag, [engine.LLMBinding(connection=on_chat, node="ask")])
    assert dict(chat_bound[0].params) == {}


def test_a_request_without_max_tokens_gets_the_connections_default(stub_llm: StubLLM, tmp_path: Path) -> None:
    """The template's flex evaluators' prompty files set no max_tokens: the base model behind llama.cpp then writes
    until its context is full (170 s per request here, past the request timeout, and each retry queues behind the
    abandoned generation). `default_max_tokens` bounds such requests; a request's own bound is kept."""
    adapter = llm_proxy.RequestAdapter("openai", "gemma", default_max_tokens=64)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert adapter.adapt("/v1/chat/completions", chat)[1] == {**chat, "model": "gemma", "max_tokens": 64}
    assert adapter.adapt("/v1/completions", {"prompt": "a", "max_tokens": None})[1]["max_tokens"] == 64
    assert adapter.adapt("/v1/completions", {"prompt": "a", "max_tokens": 5})[1]["max_tokens"] == 5
    assert "max_tokens" not in adapter.adapt("/v1/chat/completions", {**chat, "max_completion_tokens": 9})[1]
    assert "max_tokens" not in adapter.adapt("/v1/embeddings", {"input": "a"})[1]
    assert "max_tokens" not in llm_proxy.RequestAdapter("openai", "gemma").adapt("/v1/completions", {"prompt": "a"})[1]
    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm, default_max_tokens=64)) as proxy:
        status, _, _ = post_json(f"{proxy.base_url()}/chat/completions", chat)
    [sent] = stub_llm.requests()
    assert status == 200 and sent["body"]["max_tokens"] == 64
    [entry] = (tmp_path / "cache").rglob("*.json")  # the bound is part of the key: it changes the answer
    assert entry.stem == llm_proxy.cache_key("/v1/chat/completions", {**chat, "model": "gemma-3-270m",
                                                                        "max_tokens": 64}, 0)  # fmt: skip


def test_a_judge_whose_answer_is_parsed_as_json_is_asked_for_a_json_object(stub_llm: StubLLM, tmp_path: Path) -> None:
    """The template's class_flows and function_flows evaluators `json.loads` their judge's answer, and the base model
    behind llama.cpp does not keep to the prompt's format (every row failed). With `evaluate.json_answers` (the import
    sets it when the evaluation flow's code calls json.loads) the judge's requests ask for a JSON object:
    response_format on the chat API, llama.cpp's JSON grammar on its completion API (`json_grammar`)."""
    adapter = llm_proxy.RequestAdapter("openai", "gemma", json_answers=True, json_grammar=True)
    chat = {"messages": [{"role": "user", "content": "Score it. Answer JSON."}]}
    assert adapter.adapt("/v1/chat/completions", chat)[1]["response_format"] == {"type": "json_object"}
    assert adapter.adapt("/v1/completions", {"prompt": "a"})[1]["grammar"] == upstream.JSON_GRAMMAR
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    assert adapter.adapt("/v1/chat/completions", {**chat, "response_format": schema})[1]["response_format"] == schema
    assert "grammar" not in adapter.adapt("/v1/embeddings", {"input": "a"})[1]
    no_grammars = llm_proxy.RequestAdapter("openai", "gemma", json_answers=True)  # a hosted completion endpoint
    assert "grammar" not in no_grammars.adapt("/v1/completions", {"prompt": "a"})[1]
    not_asked = llm_proxy.RequestAdapter("openai", "gemma", json_grammar=True)
    assert not_asked.adapt("/v1/completions", {"prompt": "a"})[1] == {"prompt": "a", "model": "gemma"}
    assert flow_facts.read(FIXTURES / "json_grader").json_parsers == ("judge.py",)
    assert flow_facts.read(FIXTURES / "flex_grader").json_parsers == ()

    engine.configure(tmp_path / "runtime")
    stub_llm.script({"statement: concise": '{"score": 4}'})
    connection = stub_connection(stub_llm, json_grammar=True)
    proxy = llm_proxy.from_params(connection, {"retry": {"attempts": 2, "base_s": 0.01, "max_s": 1}},
                                  {"enabled": True, "keep_days": 1}, tmp_path / "cache",
                                  row_of=engine.row_of_request, json_answers=True)  # fmt: skip
    with proxy:
        session = engine.FlowSession(FIXTURES / "json_grader", engine.LLMBinding(proxy.connection(connection)))
        inputs = [{"answer": "Paris.", "statement": "concise"}]
        results = engine.in_input_order(session.run_rows([("a", inputs[0])]), ["a"])
        metrics = session.aggregate(results, inputs)
    assert results[0].error is None and results[0].outputs == {"score": 4} and metrics == {"average_score": 4.0}
    [sent] = stub_llm.requests()
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["response_format"] == {"type": "json_object"}


def test_a_flows_own_embedding_requests_are_answered_offline(stub_llm: StubLLM, tmp_path: Path) -> None:
    """The template's chat_with_pdf embeds with its own OpenAI client (text-embedding-ada-002, into a 1536-wide faiss
    index); llama.cpp serving Gemma has no /embeddings. With `local_embeddings` the proxy answers them with the
    offline all-MiniLM-L6-v2, zero-padded to the model's 1536 dimensions (distances kept), cached like any answer."""
    import numpy as np
    from openai import OpenAI

    from stages.data import embeddings

    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm, local_embeddings=True)) as proxy:
        proxy.embeddings = embeddings.openai_answer
        client = OpenAI(base_url=proxy.base_url(), api_key="sk-test-key", max_retries=0)  # base64, the SDK's default
        texts = ["BERT is a language model.", "Batteries last longer when kept cool."]
        first = client.embeddings.create(model="text-embedding-ada-002", input=texts)
        again = client.embeddings.create(model="text-embedding-ada-002", input=texts)
        status, _, refused = post_json(f"{proxy.base_url()}/embeddings", {"model": "m", "input": [[1, 2]]})
    vectors = np.array([item.embedding for item in first.data], dtype=np.float32)
    assert vectors.shape == (2, 1536) and not vectors[:, 384:].any()
    assert np.allclose(vectors[:, :384], embeddings.encode(texts), atol=1e-6)
    assert [item.embedding for item in again.data] == [item.embedding for item in first.data]
    assert proxy.total.hits == 1 and stub_llm.requests() == []  # the endpoint never asked
    assert status == 400 and "token ids are not read" in json.dumps(refused)


def test_conf_local_bounds_answers_and_takes_a_json_grammar() -> None:
    import yaml

    for config in (yaml.safe_load((REPO / "conf/llm/local.yaml").read_text()), yaml.safe_load(
            (REPO / "params.yaml").read_text())["judge"]):  # fmt: skip
        assert (config["default_max_tokens"], config["json_grammar"], config["local_embeddings"]) == (256, True, True)


def test_a_request_that_times_out_says_what_to_raise(stub_llm: StubLLM) -> None:
    """The template's class_flows chat prompty asks for 1024 tokens: 65-85 s on the embedded model on two busy cores,
    over the 60 s request timeout, and llama.cpp goes on generating the abandoned answer while the retry waits."""
    stub_llm.faults(delay_s=1.0)
    retry = llm_proxy.RetryPolicy(attempts=2, base_s=0.01, max_s=0.1)
    with llm_proxy.LLMProxy(stub_llm.base_url, None, retry, timeout_s=0.3) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/chat/completions", {"model": "m", "max_tokens": 1024,
                                      "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    message = answer["error"]["message"]
    assert status == 424 and "failed after 2 attempt(s): TimeoutError" in message
    assert "Each attempt waited request_timeout_s (0.3 s); the request asks for up to 1024 tokens" in message
    assert "llmops params llm.request_timeout_s=240 judge.request_timeout_s=240" in message


def test_default_max_tokens_is_a_whole_number_or_null() -> None:
    from stages.llm import connections

    llm = {"name": "local", "type": "openai", "api": "completion", "model": "m", "base_url": "http://127.0.0.1:1/v1",
           "api_key_env": "K", "api_key_required": False}  # fmt: skip
    assert connections.resolve({**llm, "default_max_tokens": 256}, {}).default_max_tokens == 256
    assert connections.resolve(llm, {}).default_max_tokens is None
    with pytest.raises(connections.ConnectionConfigError, match=r"default_max_tokens must be a whole number >= 1"):
        connections.resolve({**llm, "default_max_tokens": 0}, {})


# --- the two path layouts


def test_the_proxy_translates_between_the_openai_and_azure_layouts() -> None:
    to_openai = llm_proxy.RequestAdapter("openai", "gemma")
    path, body = to_openai.adapt("/v1/openai/deployments/gpt-35/chat/completions?api-version=2024-10-21", {"n": 1})
    assert (path, body) == ("/v1/chat/completions", {"n": 1, "model": "gemma"})
    to_azure = llm_proxy.RequestAdapter("azure_openai", "my-deployment", "2024-10-21")
    path, body = to_azure.adapt("/chat/completions", {"model": "gpt-4o"})
    assert path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert body == {"model": "gpt-4o"}
    assert to_azure.headers({"Authorization": "Bearer k1"}) == {"Authorization": "Bearer k1", "api-key": "k1"}
    assert to_openai.headers({"api-key": "k2"}) == {"api-key": "k2", "Authorization": "Bearer k2"}
    same = {"model": "gemma"}
    assert to_openai.adapt("/v1/completions", same) == ("/v1/completions", same)
    assert llm_proxy.RequestAdapter().adapt("/openai/deployments/x/completions?a=1", same)[0].startswith("/openai/")


# --- flows that build their own client, and flex evaluators taking model_config


@pytest.mark.parametrize("client", ["openai", "azure"])
def test_a_flow_with_its_own_client_goes_through_the_proxy(stub_llm: StubLLM, tmp_path: Path, client: str) -> None:
    engine.configure(tmp_path / "runtime")
    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm)) as proxy:
        binding = engine.LLMBinding(proxy.connection(stub_connection(stub_llm)))
        session = engine.FlowSession(FIXTURES / "own_client", binding)
        results = list(session.run_rows([("r1", {"text": "hello world", "client": client})]))
        usage = proxy.row_usage("r1")
    assert results[0].error is None and results[0].outputs["output"]
    assert proxy.total.misses == 1 and usage.requests == 1  # counted, cached and attributed to its row
    sent = stub_llm.requests()
    assert [r["path"] for r in sent] == ["/v1/completions"] and sent[0]["body"]["model"] == "gemma-3-270m"
    assert (
        "OPENAI_BASE_URL" not in __import__("os").environ
        or proxy.base_url() not in __import__("os").environ["OPENAI_BASE_URL"]
    )  # restored after the rows


def test_a_flex_class_evaluator_gets_the_model_config_type_it_asks_for(stub_llm: StubLLM, tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")
    stub_llm.script({"Answer: Paris": "yes", "Answer: Rome": "no"})
    assert engine.declares_model_config(FIXTURES / "flex_grader")
    assert not engine.declares_model_config(FIXTURES / "own_client")
    with proxy_for(stub_llm, tmp_path, stub_connection(stub_llm)) as proxy:
        binding = engine.LLMBinding(proxy.connection(stub_connection(stub_llm)))
        session = engine.FlowSession(FIXTURES / "flex_grader", binding)
        inputs = [{"answer": "Paris", "expected": "Paris"}, {"answer": "Rome", "expected": "Paris"}]
        results = engine.in_input_order(session.run_rows([("a", inputs[0]), ("b", inputs[1])]), ["a", "b"])
        metrics = session.aggregate(results, inputs)
    assert [r.error for r in results] == [None, None]
    assert [r.outputs["grade"] for r in results] == ["Correct", "Incorrect"]
    assert metrics == {"accuracy": 0.5, "total": 2}
    # The AzureOpenAIModelConfiguration's client asked for the Azure layout; the proxy sent the OpenAI one.
    assert {r["path"] for r in stub_llm.requests()} == {"/v1/chat/completions"} and proxy.total.misses == 2


def test_model_config_kind_reads_the_annotation() -> None:
    from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration

    assert engine.model_config_kind(AzureOpenAIModelConfiguration) == "azure_openai"
    assert engine.model_config_kind(OpenAIModelConfiguration | None) == "openai"
    assert engine.model_config_kind("AzureOpenAIModelConfiguration") == "azure_openai"
    assert engine.model_config_kind(AzureOpenAIModelConfiguration | OpenAIModelConfiguration) is None
    assert engine.model_config_kind(dict) is None


# --- requirements.txt


def test_a_flow_whose_requirements_are_missing_is_refused_with_the_command_to_run() -> None:
    with pytest.raises(engine.RequirementsError) as refused:
        engine.check_requirements(FIXTURES / "needs_package")
    message = str(refused.value)
    assert "llmops-test-missing-package>=1.0 (llmops-test-missing-package is not installed)" in message
    assert "packaging<1 (packaging " in message and "promptflow" not in message.split("installed:")[1].split(";")[0]
    command = message.splitlines()[-1].strip()
    assert command.startswith(f"{Path(sys.executable).absolute().relative_to(REPO)} -m pip install -r ")
    assert command.endswith(" tests/fixtures/third_party/needs_package/requirements.txt")  # from the project root
    engine.check_requirements(FIXTURES / "entities")  # promptflow, promptflow-tools: installed


def test_a_flow_session_refuses_unmet_requirements_before_loading(tmp_path: Path) -> None:
    with pytest.raises(engine.RequirementsError, match="pip install -r"):
        engine.FlowSession(FIXTURES / "needs_package")


def test_an_extra_whose_packages_are_missing_is_unmet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real_requires, real_version = importlib.metadata.requires, importlib.metadata.version

    def requires(name: str) -> list[str] | None:
        return ['llmops-test-missing-azure; extra == "azure"'] if name == "promptflow" else real_requires(name)

    monkeypatch.setattr(importlib.metadata, "requires", requires)
    monkeypatch.setattr(importlib.metadata, "version", real_version)
    (tmp_path / "requirements.txt").write_text("promptflow[azure]>=1.7.0\n")
    unmet = engine.unmet_requirements(tmp_path / "requirements.txt")
    assert unmet == ["promptflow[azure]>=1.7.0 (promptflow[azure] needs llmops-test-missing-azure; extra == "
                     '"azure": llmops-test-missing-azure is not installed)']  # fmt: skip


def test_the_old_promptflow_sdk_name_stands_for_promptflow_and_promptflow_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference template's NER flows still list `promptflow-sdk[builtins]`, prompt flow's name before 1.0. PyPI
    holds an unrelated empty package under that name today: it is checked as what it stands for, never pip-installed."""
    import importlib.metadata

    flow = tmp_path / "ner"
    shutil.copytree(FIXTURES / "entities", flow)
    (flow / "requirements.txt").write_text("promptflow\npromptflow-tools\npromptflow-sdk[builtins]\n")
    [note] = engine.check_requirements(flow)  # satisfied: nothing refused
    assert note.endswith(
        "requirements.txt, line 3: promptflow-sdk[builtins]: prompt flow's package name before 1.0; its built-in "
        "tools are promptflow-tools today. The PyPI project promptflow-sdk now holds an unrelated empty package "
        f"(0.0.1): do not install it; satisfied by promptflow {importlib.metadata.version('promptflow')}, "
        f"promptflow-tools {importlib.metadata.version('promptflow-tools')}"
    )
    engine.check_requirements(flow)
    assert capsys.readouterr().err.count("promptflow-sdk[builtins]: prompt flow's package name") == 1  # said once

    # Something else missing: the command names the packages, as `pip install -r` would fetch the empty package.
    (flow / "requirements.txt").write_text("promptflow-sdk[builtins]\nllmops-test-missing-package>=1.0\n")
    with pytest.raises(engine.RequirementsError) as refused:
        engine.check_requirements(flow)
    command = str(refused.value).splitlines()[-1].strip()
    assert command.endswith(" -m pip install 'llmops-test-missing-package>=1.0'") and "-r" not in command.split()

    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "promptflow-tools":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    check = engine.check_requirements_file(flow / "requirements.txt")
    assert check.unmet[0] == (
        "promptflow-sdk[builtins] (stands for promptflow, promptflow-tools: promptflow-tools is not installed)"
    )
    assert check.pip_command().endswith(" -m pip install promptflow-tools 'llmops-test-missing-package>=1.0'")


def test_a_baked_flow_installs_what_a_renamed_package_stands_for(tmp_path: Path) -> None:
    from stages.engine import vendor

    flow = tmp_path / "ner"
    shutil.copytree(FIXTURES / "entities", flow)
    (flow / "requirements.txt").write_text("promptflow\npromptflow-sdk[builtins]\n")
    vendor.vendor(flow, REPO / "stages")
    lines = (flow / "requirements.txt").read_text().splitlines()
    assert "promptflow-sdk[builtins]" not in lines and lines[1].startswith("# promptflow-sdk[builtins]: renamed")
    assert [line.split("==")[0] for line in lines[2:4]] == ["promptflow", "promptflow-tools"]


# --- warnings per row


def test_what_a_row_prints_to_stderr_or_logs_as_a_warning_is_recorded_on_it(tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")
    session = engine.FlowSession(FIXTURES / "warns_per_row", copies=tmp_path / "runtime")  # its cache: in the copy
    rows = [("bad", {"url": "https://down.example/a"}), ("good", {"url": "https://ok.example/b"})]
    results = engine.in_input_order(session.run_rows(rows), ["bad", "good"])
    assert [r.outputs["text"] for r in results] == ["No available content", "content of https://ok.example/b"]
    bad, good = results[0].warnings, results[1].warnings
    assert any("stderr> Get url failed with error: cannot reach https://down.example/a" in w for w in bad)
    assert any(w == "WARNING fetch: no content for https://down.example/a" for w in bad)
    assert "[fetch] stdout> fetching https://down.example/a" in bad  # a DAG node's print(), as prompt flow kept it
    assert good == ("[fetch] stdout> fetching https://ok.example/b",)
    assert not (FIXTURES / "warns_per_row" / ".pages").exists()
    [tried] = (tmp_path / "runtime" / "flows").glob("warns_per_row-*/*/warns_per_row/.pages/tried.txt")
    assert tried.read_text().splitlines() == ["https://down.example/a", "https://ok.example/b"]


# --- tiktoken: no download at run time

TIKTOKEN_PROBE = """
import json, socket, sys
from pathlib import Path
attempts = []
def refuse(self, address, *args):
    attempts.append(str(address))
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.create_connection = lambda address, *a, **k: refuse(None, address)
from stages import engine
from stages.engine.promptflow.environment import DownloadRefused
engine.configure(Path(sys.argv[1]))
import tiktoken
from promptflow.core import Prompty
encoding = tiktoken.get_encoding("cl100k_base")
prompty = Prompty.load(source=sys.argv[2])
estimate = prompty.estimate_token_count(question="What is the capital of France?",
    chat_history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
try:
    tiktoken.get_encoding("p50k_base")
    refused = ""
except DownloadRefused as exc:
    refused = str(exc)
print(json.dumps({"tokens": len(encoding.encode("hello world")), "estimate": estimate, "refused": refused,
                  "attempts": attempts}))
"""


def test_token_counts_need_no_download(tmp_path: Path) -> None:
    prompty = tmp_path / "chat.prompty"
    prompty.write_text(
        "---\nname: chat\nmodel:\n  api: chat\n  configuration:\n    type: openai\n    model: gpt-35-turbo\n"
        "  parameters:\n    max_tokens: 16\ninputs:\n  question:\n    type: string\n  chat_history:\n    type: list\n"
        "---\nsystem:\nAnswer briefly.\n{% for item in chat_history %}\n{{item.role}}:\n{{item.content}}\n"
        "{% endfor %}\nuser:\n{{question}}\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIKTOKEN")}
    probe = subprocess.run([sys.executable, "-c", TIKTOKEN_PROBE, str(tmp_path / "runtime"), str(prompty)],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=300)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["tokens"] == 2 and result["estimate"] > 16
    assert "p50k_base.tiktoken: nothing is downloaded at run time" in result["refused"]
    assert result["attempts"] == []  # not one connection was tried


# --- stock evaluators' outputs in headline metrics, and what the report shows


def test_stock_evaluator_outputs_map_to_numbers() -> None:
    from stages.metrics import headline

    assert [headline.as_number(v) for v in ("Correct", " incorrect ", "PASS", "0.5", "maybe", None, True, 2)] == [
        1.0, 0.0, 1.0, 0.5, None, None, 1.0, 2.0]  # fmt: skip
    counts = {"exact_match": 0, "partial_match": 1, "answer": ["a"], "ground_truth": ["a", "b"]}
    assert headline.row_value({"match_cnt": counts}, "match_cnt") == 0.0  # its first number: exact_match
    assert headline.row_value({"match_cnt": counts}, "match_cnt.partial_match") == 1.0


def test_a_minus_one_zero_one_score_is_an_accuracy_with_failed_rows_counted_wrong() -> None:
    from stages.metrics import headline

    spec = headline.MetricSpec("accuracy", "mean", ("score",))
    rows = [{"row_id": f"r{i}", "eval": {"score": s}} for i, s in enumerate([1, 1, 0, -1, -1])]
    _, values = headline.table(spec, rows)
    assert values[:, 0].tolist() == [1, 1, 0, 0, 0]
    assert headline.evaluate_metric(spec, rows).interval.estimate == pytest.approx(0.4)
    assert headline.value_notes(spec, rows) == ["accuracy: score: -1 (the row failed) counts 0"]
    grades = [{"row_id": "a", "eval": {"grade": "Correct"}}, {"row_id": "b", "eval": {"grade": "Incorrect"}}]
    graded = headline.MetricSpec("accuracy", "mean", ("grade",))
    assert headline.evaluate_metric(graded, grades).interval.estimate == 0.5
    assert headline.value_notes(graded, grades) == [
        "accuracy: grade: grade strings (Correct, Incorrect) are read as 1 (correct, pass, yes...) or 0"
    ]
    counted = headline.MetricSpec("accuracy", "mean", ("match_cnt",))
    notes = headline.value_notes(counted, [{"row_id": "a", "eval": {"match_cnt": {"exact_match": 1}}}])
    assert notes == ["accuracy: match_cnt is an object: its first number, match_cnt.exact_match, is used "
                     "(name another with a path)"]  # fmt: skip


def test_the_report_shows_every_logged_metric_and_warns_of_a_placeholder_answer() -> None:
    from stages.results import bulk, reporting
    from stages.results.rows import Columns, VariantReport, flatten_rows, logged_metrics, side_by_side

    metrics = {"exact_match_rate": 0.25, "partial_match_rate": 0.5, "rows": 4, "run_errors": 0, "eval_errors": 0,
               "accuracy": 0.2, "headline": {"accuracy": {"value": 0.25, "ci_low": 0.0, "ci_high": 0.75, "rows": 4}},
               "cache": {"hits": 1, "misses": 3, "errors": 0}}  # fmt: skip
    assert logged_metrics(metrics) == {"exact_match_rate": 0.25, "partial_match_rate": 0.5, "accuracy": 0.2}
    results = [engine.RowResult(f"r{i}", {"text": "No available content"}, None, 0.1, warnings=("w",))
               for i in range(4)] + [engine.RowResult("r4", {"text": "ok"}, None, 0.1)]  # fmt: skip
    same = bulk.identical_outputs(results)
    assert same == {"rows": 4, "of": 5, "output": '{"text": "No available content"}'}
    assert bulk.identical_outputs(results[2:]) is None  # 2 of 3 rows: not enough to tell
    summary = bulk.summarize(results, 1.0, llm_proxy.Usage(), None)
    assert summary["identical_outputs"] == same and summary["rows_with_warnings"] == 4
    columns = Columns(inputs=("url",), label="label", prediction="text", raw_answer="text", correct="ok")
    rows = [{"row_id": r.row_id, "url": "u", "label": "x", "outputs": r.outputs, "eval": {"ok": False},
             **({"warnings": list(r.warnings)} if r.warnings else {})} for r in results]  # fmt: skip
    part = VariantReport("v1", flatten_rows(rows, columns), metrics, summary)
    page = reporting.render_html("ner", {}, [part], side_by_side([part], columns.inputs), 80, 50)
    assert "<td>exact_match_rate</td><td>0.25</td>" in page and "<td>partial_match_rate</td><td>0.5</td>" in page
    assert "accuracy (logged by the flow)" in page and '<div class="k">accuracy (headline)</div>' in page
    # quotes escaped by Jinja2 (MarkupSafe) as &#34;
    assert "4 of 5 answered rows have the same output {&#34;text&#34;: &#34;No available content&#34;}" in page
    assert "<th>v1.warnings</th>" in page and "4 rows printed or logged warnings" in page


CHECKER = """
class Checker:
    def __call__(self, answer: str):
        if answer == "boom":
            raise ValueError("cannot grade boom")
        return {"score": len(answer)}

    def __aggregate__(self, line_results: list):
        return {"mean": sum(r["correctness"] for r in line_results) / len(line_results)}
"""


def test_an_aggregation_that_fails_is_recorded_and_the_rows_still_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the template's class_flows and function_flows evaluators: their `__aggregate__` divides by the number of
    rows and reads keys a row may lack. Every row failed: nothing to aggregate. An aggregation that raises: its
    error is in metrics.json and the report, and the evaluate stage goes on."""
    from stages.results import evaluation, reporting
    from stages.results.rows import logged_metrics

    engine.configure(tmp_path / "runtime")
    flow = tmp_path / "checker"
    flow.mkdir()
    (flow / "checker.py").write_text(CHECKER)
    (flow / "flow.flex.yaml").write_text("entry: checker:Checker\n")
    session = engine.FlowSession(flow)
    use_case = {"evaluate": {"mapping": {"answer": "outputs.output"}}}
    prepared = [{"row_id": "a"}, {"row_id": "b"}]

    def run_rows(*answers: str) -> list[dict]:
        return [
            {"row_id": r, "outputs": {"output": a}, "error": None, "latency_s": 0.1}
            for r, a in zip("ab", answers, strict=True)
        ]

    _, metrics, failed = evaluation.evaluate_variant(
        [session], "uc", "v1", use_case, prepared, run_rows("boom", "boom")
    )
    assert len(failed) == 2 and "aggregation_error" not in metrics and metrics["eval_errors"] == 2
    rows, metrics, failed = evaluation.evaluate_variant(
        [session], "uc", "v1", use_case, prepared, run_rows("x", "boom")
    )
    assert metrics["aggregation_error"] == "aggregation failed: __aggregate__ raised KeyError: 'correctness'"
    assert (metrics["rows"], metrics["eval_errors"]) == (1, 1) and rows[0]["eval"] == {"score": 1}
    assert "evaluate uc v1: warning: aggregation failed: __aggregate__ raised KeyError" in capsys.readouterr().err
    assert logged_metrics(metrics) == {}
    banner = reporting.warnings({}, metrics)
    assert "aggregation failed (aggregation failed: __aggregate__ raised KeyError: 'correctness')" in banner[0]


# llama.cpp's answer to a prompt longer than its context (llama_cpp/server/errors.py), here with the key in it.
TOO_LONG = (
    "This model's maximum context length is 2048 tokens. However, you requested 6363 tokens (6363 in the "
    "messages, None in the completion). Please reduce the length of the messages or completion. sk-test-key"
)


@pytest.mark.parametrize("status", [400, 401])
def test_a_judge_prompt_longer_than_the_models_context_is_an_error_of_its_row(
    stub_llm: StubLLM, tmp_path: Path, status: int
) -> None:
    """The template's chat_with_pdf evaluation sends the documents to its judges: 6,363 tokens, past the embedded
    model's 2,048, and llama.cpp answers HTTP 400. That row is not evaluated (its error is the server's message, the
    key redacted), it is asked once, counted in eval_errors and said in the report; the stage goes on. A 401 (a
    wrong key) is no row's fault: it still fails the stage."""
    from stages.results import evaluation, reporting

    engine.configure(tmp_path / "runtime")
    stub_llm.faults(status=status, message=TOO_LONG, match="Expected: long", fail_rate=1.0)
    connection = stub_connection(stub_llm)
    use_case = {"evaluate": {"mapping": {"answer": "outputs.text", "expected": "data.label"}}}
    prepared = [{"row_id": "a", "label": "short"}, {"row_id": "b", "label": "long"}]
    run_rows = [{"row_id": r["row_id"], "outputs": {"text": "x"}, "error": None, "latency_s": 0.1} for r in prepared]
    with proxy_for(stub_llm, tmp_path, connection) as proxy:
        session = engine.FlowSession(FIXTURES / "flex_grader", engine.LLMBinding(proxy.connection(connection)))
        rows, metrics, failed = evaluation.evaluate_variant([session], "uc", "v1", use_case, prepared, run_rows, proxy)
    assert len([r for r in stub_llm.requests() if r["fault"]]) == 1 and proxy.total.retries == 0  # asked once
    assert rows[0]["eval_error"] is None and "maximum context length is 2048 tokens" in rows[1]["eval_error"]
    assert "sk-test-key" not in rows[1]["eval_error"] and metrics["eval_errors"] == 1 and metrics["rows"] == 1
    if status == 401:
        assert [r.row_id for r in failed] == ["b"] and "judge_rejected" not in metrics
        return
    assert failed == [] and metrics["judge_rejected"] == 1
    [banner] = reporting.warnings({}, metrics)
    assert banner.startswith("1 of 2 rows not evaluated: the judge LLM rejected their request (HTTP 400")


# --- by config alone, through the stages


def onboard(project: Project, name: str, flow: str, eval_flow: str, rows: list[dict], *options: str) -> None:
    folder = project.root / "use_cases" / name
    shutil.copytree(FIXTURES / flow, folder / "flows" / "standard")
    shutil.copytree(FIXTURES / eval_flow, folder / "flows" / "evaluate")
    (folder / "data").mkdir()
    (folder / "data" / "dataset.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    project.sh("dvc", "add", f"use_cases/{name}/data/dataset.jsonl")
    flows = f"use_cases/{name}/flows"
    project.sh("llmops", "add-use-case", name, "--flow", f"{flows}/standard", "--eval-flow", f"{flows}/evaluate",
               "--dataset", f"use_cases/{name}/data/dataset.jsonl", *options)  # fmt: skip


def test_third_party_flows_run_by_config_alone(project: Project, stub_llm: StubLLM) -> None:
    # As llama.cpp: a null penalty is a 500, and a prompt longer than the context (web3's third judge prompt) a 400.
    stub_llm.faults(reject_null_params=True, status=400, message=TOO_LONG, match="Expected: page 2", fail_rate=1.0)
    stub_llm.script({"Answer: No available content": "no"})
    entities = [json.loads(line) for line in (FIXTURES / "entities" / "data.jsonl").read_text().splitlines()]
    onboard(project, "ner3", "entities", "entity_match", entities, "--inputs", "text,entity_type", "--label",
            "results", "--map", "entities=outputs.entities", "--map", "ground_truth=data.results",
            "--correct", "match_cnt")  # fmt: skip
    pages = [{"url": f"https://down.example/{i}", "label": f"page {i}"} for i in range(4)]
    onboard(project, "web3", "warns_per_row", "flex_grader", pages, "--inputs", "url", "--label", "label",
            "--map", "answer=outputs.text", "--map", "expected=data.label", "--correct", "grade")  # fmt: skip
    result = project.sh("dvc", "repro", "report@ner3", "report@web3")
    ran = set(ran_stages(result.stdout + result.stderr))
    stages = {f"{stage}@{uc}" for stage in ("prepare", "run", "evaluate", "report") for uc in ("ner3", "web3")}
    assert ran == CODE_STAGES | stages  # a fresh clone: each kind's code manifest first

    data = project.root / "data"
    ner_rows = [json.loads(line) for line in (data / "ner3/run/outputs/v1.jsonl").read_text().splitlines()]
    assert len(ner_rows) == 4 and all(row["error"] is None for row in ner_rows)  # null penalties dropped for local
    [too_long] = [r for r in stub_llm.requests() if r["fault"]]  # asked once, not retried
    assert too_long["fault"] == 400 and "Expected: page 2" in json.dumps(too_long["body"])
    assert all("presence_penalty" not in r["body"] for r in stub_llm.requests())
    metrics = json.loads((data / "ner3/eval/metrics.json").read_text())
    assert {"exact_match_rate", "partial_match_rate"} <= set(metrics)
    assert 0 <= metrics["headline"]["accuracy"]["value"] <= 1 and metrics["headline"]["accuracy"]["rows"] == 4
    assert "match_cnt.exact_match, is used" in result.stderr
    page = (data / "ner3/report/report.html").read_text()
    assert "<td>exact_match_rate</td>" in page and "<td>partial_match_rate</td>" in page

    web_rows = [json.loads(line) for line in (data / "web3/run/outputs/v1.jsonl").read_text().splitlines()]
    assert all("stderr> Get url failed" in " ".join(row["warnings"]) for row in web_rows)
    summary = json.loads((data / "web3/run/summary.json").read_text())
    assert summary["identical_outputs"]["rows"] == 4 and summary["rows_with_warnings"] == 4
    web_metrics = json.loads((data / "web3/eval/metrics.json").read_text())  # the flex grader got the judge LLM
    web_operations = json.loads((data / "web3/eval/operations.json").read_text())  # the LLM cache's counts
    assert web_metrics["accuracy"] == 0.0 and web_metrics["total"] == 3 and web_operations["cache"]["misses"] == 4
    assert web_metrics["headline"]["accuracy"]["value"] == 0.0  # "Incorrect" grades, read as 0
    # The judge prompt too long for the model: that row's evaluation error, the stage finished.
    assert (web_metrics["eval_errors"], web_metrics["judge_rejected"], web_metrics["rows"]) == (1, 1, 3)
    assert "evaluate web3 v1: warning: 1 of 4 rows not evaluated: the judge LLM rejected their request" in result.stderr
    web_page = (data / "web3/report/report.html").read_text()
    assert "4 of 4 answered rows have the same output" in web_page
    assert (
        "1 of 4 rows not evaluated" in web_page and "maximum context length is 2048 tokens" in web_page
    )  # the whole error on hover
    # web3's flow wrote its cache (.pages/, as chat_with_pdf's .pdfs/) in the copy it ran from, not in its folder: a
    # dependency of the run stage, unchanged
    assert not (project.root / "use_cases/web3/flows/standard/.pages").exists()
    assert len(list((project.root / ".llmops/flows").glob("standard-*/*/standard/.pages/tried.txt"))) == 1
    assert (
        len(list((project.root / ".llmops/flows").glob("evaluate-*/*/evaluate/flow.*.yaml"))) == 2
    )  # so are eval flows
    assert "Data and pipelines are up to date" in project.sh("dvc", "status", "run@web3").stdout
    assert project.repro("report@ner3", "report@web3") == []


def test_drop_null_params_must_be_true_or_false() -> None:
    from stages.llm import connections

    llm = {"name": "local", "type": "openai", "api": "completion", "model": "m", "base_url": "http://127.0.0.1:1/v1",
           "api_key_env": "K", "api_key_required": False}  # fmt: skip
    assert connections.resolve({**llm, "drop_null_params": True}, {}).drop_null_params is True
    assert connections.resolve(llm, {}).drop_null_params is False
    with pytest.raises(connections.ConnectionConfigError, match=r"drop_null_params must be true or false, got 'yes' "
                       r"\(conf/llm/local.yaml\)"):  # fmt: skip
        connections.resolve({**llm, "drop_null_params": "yes"}, {})
