"""The row-level LLM cache: content keys, hits and misses, atomic entries, pruning, per-row usage, and the
pipeline behaviours it buys (reruns, prompt edits, new rows, a killed run, a fresh clone) counted at the stub."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, Project, Reproduced, StubLLM, post_json, ran_stages, without_fork_server

from stages import engine
from stages.llm import llm_proxy
from stages.llm.connections import Connection

BODY = {"model": "m", "prompt": "Question: 2+2?\nAnswer:", "max_tokens": 3, "temperature": 0, "stop": ["\n"]}
RETRY = llm_proxy.RetryPolicy(attempts=3, base_s=0.01, max_s=5)
UC = "web_classification"


def entries(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("*.json"))]


def test_the_key_is_the_canonical_body_path_and_repeat_index() -> None:
    reordered = json.loads(json.dumps({"stop": ["\n"], "temperature": 0, "max_tokens": 3, **BODY}))
    assert llm_proxy.cache_key("/v1/completions", BODY, 0) == llm_proxy.cache_key("/v1/completions", reordered, 0)
    variants = {
        llm_proxy.cache_key("/v1/completions", BODY, 0),
        llm_proxy.cache_key("/v1/completions", BODY, 1),
        llm_proxy.cache_key("/v1/chat/completions", BODY, 0),
        llm_proxy.cache_key("/v1/completions?api-version=2", BODY, 0),
        llm_proxy.cache_key("/v1/completions", {**BODY, "temperature": 0.7}, 0),
        llm_proxy.cache_key("/v1/completions", {**BODY, "model": "other"}, 0),
    }
    assert len(variants) == 6


def test_a_repeated_request_is_a_hit_whatever_its_headers_and_no_header_is_stored(
    stub_llm: StubLLM, tmp_path: Path
) -> None:
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=5) as proxy:
        first = post_json(f"{proxy.base_url()}/completions", BODY, {"Authorization": "Bearer sk-first-secret"})
        reordered = dict(reversed(list(BODY.items())))
        again = post_json(f"{proxy.base_url()}/completions", reordered, {"Authorization": "Bearer sk-other-secret"})
    assert first[0] == again[0] == 200 and first[2] == again[2]
    sent = stub_llm.requests()
    assert len(sent) == 1 and sent[0]["headers"]["Authorization"] == "Bearer sk-first-secret"  # passed through
    assert sent[0]["path"] == "/v1/completions"  # the repeat prefix is not forwarded
    assert (proxy.total.hits, proxy.total.misses, proxy.total.errors) == (1, 1, 0)
    [entry] = entries(tmp_path / "cache")
    assert entry["request"] == {"path": "/v1/completions", "repeat": 0, "body": BODY}
    assert entry["response"] == first[2] and entry["key"] == llm_proxy.cache_key("/v1/completions", BODY, 0)
    stored = b"".join(path.read_bytes() for path in (tmp_path / "cache").rglob("*") if path.is_file())
    assert b"secret" not in stored and b"Authorization" not in stored and b"Bearer" not in stored
    # Tokens are counted for every answer returned; those of hits are also counted apart.
    usage = first[2]["usage"]
    assert proxy.total.prompt_tokens == 2 * usage["prompt_tokens"] == 2 * proxy.total.cached_prompt_tokens


def test_each_repeat_index_has_its_own_entries(stub_llm: StubLLM, tmp_path: Path) -> None:
    with llm_proxy.LLMProxy(stub_llm.base_url, llm_proxy.CacheStore(tmp_path), RETRY, timeout_s=5) as proxy:
        for repeat in (0, 1, 1, 2, 0):
            assert post_json(f"{proxy.base_url(repeat)}/completions", BODY)[0] == 200
    assert len(stub_llm.requests()) == 3 and proxy.total.hits == 2


def test_streaming_requests_are_refused_with_a_clear_message(stub_llm: StubLLM, tmp_path: Path) -> None:
    with llm_proxy.LLMProxy(stub_llm.base_url, llm_proxy.CacheStore(tmp_path), RETRY, timeout_s=5) as proxy:
        status, _, answer = post_json(f"{proxy.base_url()}/completions", {**BODY, "stream": True})
        bad_path = post_json(f"http://127.0.0.1:{proxy.port}/v1/completions", BODY)
    assert status == 400 and "stream: true" in answer["error"]["message"]
    assert bad_path[0] == 404 and "/r<repeat>/" in bad_path[2]["error"]["message"]
    assert stub_llm.requests() == [] and proxy.total.errors == 1


def test_errors_are_never_cached(stub_llm: StubLLM, tmp_path: Path) -> None:
    stub_llm.faults(fail_first=3, status=500)
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=5) as proxy:
        assert post_json(f"{proxy.base_url()}/completions", BODY)[0] == llm_proxy.GIVE_UP_STATUS
        assert entries(tmp_path / "cache") == []
        assert post_json(f"{proxy.base_url()}/completions", BODY)[0] == 200  # asked again, and now answered
    assert len(stub_llm.requests()) == 4 and len(entries(tmp_path / "cache")) == 1
    assert (proxy.total.misses, proxy.total.errors, proxy.total.hits) == (2, 1, 0)


def test_a_disabled_cache_asks_every_time_and_stores_nothing(stub_llm: StubLLM, tmp_path: Path) -> None:
    llm = {"retry": {"attempts": 2, "base_s": 0.01, "max_s": 1}}
    connection = Connection("local", "openai", "completion", "m", stub_llm.base_url, "unused")
    proxy = llm_proxy.from_params(connection, llm, {"enabled": False, "keep_days": 1}, tmp_path / "cache")
    with proxy:
        for _ in range(2):
            assert post_json(f"{proxy.base_url()}/completions", BODY)[0] == 200
    assert len(stub_llm.requests()) == 2 and proxy.total.misses == 2
    assert (tmp_path / "cache").is_dir() and not any((tmp_path / "cache").iterdir())


WRITER = """
import sys, time
from pathlib import Path
from stages.llm.llm_proxy import CacheStore
store, i = CacheStore(Path(sys.argv[1])), 0
print("writing", flush=True)
while True:
    store.put(f"{i:064x}", {"body": {"prompt": "x" * 2_000_000}}, {"choices": [{"text": str(i)}]})
    i += 1
"""


def test_entries_are_whole_even_when_the_writer_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert writer.stdout and writer.stdout.readline() == "writing\n"
    time.sleep(1.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    store = llm_proxy.CacheStore(folder)
    keys = sorted(store.keys())
    assert len(keys) >= 2
    for key in keys:  # every entry that exists is complete
        assert store.get(key) == {"choices": [{"text": str(int(key, 16))}]}
    temp = list(folder.rglob(".*.tmp"))
    assert store.prune(keep=set(keys), max_age_s=0) == len(temp)  # a killed write leaves at most a temp file
    assert not list(folder.rglob(".*.tmp")) and sorted(store.keys()) == keys


def test_prune_keeps_the_entries_a_run_used_and_the_young_ones(tmp_path: Path) -> None:
    store = llm_proxy.CacheStore(tmp_path)
    for key in ("aa" * 32, "bb" * 32, "cc" * 32):
        store.put(key, {"body": {}}, {"choices": []})
    day = 86400
    stray = tmp_path / "bb" / f".{'bb' * 32}.tmp"  # what a write killed before its rename leaves
    stray.write_text('{"body": {"prom')
    assert store.prune(keep={"aa" * 32}, max_age_s=30 * day, now=time.time() + 10 * day) == 1 and not stray.exists()
    assert store.prune(keep={"aa" * 32}, max_age_s=5 * day, now=time.time() + 10 * day) == 2
    assert list(store.keys()) == ["aa" * 32] and sorted(p.name for p in tmp_path.iterdir()) == ["aa"]


def local(base_url: str, **changes: object) -> Connection:
    return Connection(**{"name": "local", "type": "openai", "api": "completion", "model": "m", "base_url": base_url,
                         "api_key": "unused", **changes})  # fmt: skip


TWO_LLM_NODES = """
inputs:
  text: {type: string}
outputs:
  label: {type: string, reference: "${classify.output}"}
nodes:
- name: summarize
  type: llm
  source: {type: code, path: summarize.jinja2}
  inputs: {text: "${inputs.text}", model: m, max_tokens: 8, temperature: 0, presence_penalty: 0, frequency_penalty: 0}
  connection: llm
  api: completion
- name: classify
  type: llm
  source: {type: code, path: classify.jinja2}
  inputs: {summary: "${summarize.output}", model: m, max_tokens: 2, temperature: 0, presence_penalty: 0,
           frequency_penalty: 0}
  connection: llm
  api: completion
"""


def test_a_multi_node_flow_asks_again_only_for_the_node_whose_prompt_changed(stub_llm: StubLLM, tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(TWO_LLM_NODES)
    (flow / "summarize.jinja2").write_text("Summarize in three words: {{text}}\nSummary:")
    (flow / "classify.jinja2").write_text("Classify this summary: {{summary}}\nLabel:")
    (flow / "classify_v2.jinja2").write_text("Label the topic of: {{summary}}\nTopic:")
    rows = [(f"r{i}", {"text": text}) for i, text in enumerate(["A soup recipe", "A football match", "A new phone"])]
    store = llm_proxy.CacheStore(tmp_path / "cache")
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=5) as proxy:
        connection = proxy.connection(local(stub_llm.base_url))
        for classify_prompt in ("classify.jinja2", "classify_v2.jinja2", "classify_v2.jinja2"):
            session = engine.FlowSession(
                flow,
                engine.LLMBinding(connection, node="summarize"),
                engine.LLMBinding(connection, node="classify", prompt=classify_prompt),
            )
            assert all(result.error is None for result in session.run_rows(rows))
    prompts = [request["body"]["prompt"] for request in stub_llm.requests()]
    assert len(prompts) == 6 + 3 + 0  # then only the changed node, then nothing
    assert all(prompt.startswith("Label the topic of:") for prompt in prompts[6:])
    assert (proxy.total.hits, proxy.total.misses) == (3 + 6, 9)


def test_usage_is_attributed_to_rows_in_every_flow_kind(stub_llm: StubLLM, tmp_path: Path) -> None:
    store = llm_proxy.CacheStore(tmp_path / "cache")
    cases = {  # flow folder, binding, rows: (row id, inputs, text only that row's prompt holds)
        "use_cases/web_classification/flows/classify": (
            {"node": "classify", "prompt": "classify_v1.jinja2"},
            [("d1", {"url": "https://a.example", "text": "Lentil soup"}, "Lentil soup"),
             ("d2", {"url": "https://b.example", "text": "Cup final tonight"}, "Cup final")]),
        "use_cases/general_qa/flows/answer": (
            {"prompt": "answer.prompty"},
            [("p1", {"question": "Capital of Peru?"}, "Peru"), ("p2", {"question": "Who wrote Emma?"}, "Emma")]),
        "use_cases/chat/flows/assistant": (
            {"prompt": "assistant.prompty", "params": {"max_tokens": 8}},
            [("f1", {"question": "Hi, who are you?", "chat_history": []}, "who are you"),
             ("f2", {"question": "Name a red fruit", "chat_history": []}, "red fruit")]),
    }  # fmt: skip
    with llm_proxy.LLMProxy(stub_llm.base_url, store, RETRY, timeout_s=5, row_of=engine.row_of_request) as proxy:
        connection = proxy.connection(local(stub_llm.base_url))
        usage = {}
        for folder, (binding, rows) in cases.items():
            session = engine.FlowSession(REPO / folder, engine.LLMBinding(connection, **binding))
            for row_id, inputs, _ in rows:
                assert session.run(row_id, inputs).error is None
                usage[row_id] = proxy.row_usage(row_id)
    sent = [request["body"]["prompt"] for request in stub_llm.requests()]
    for _, rows in cases.values():
        for row_id, _, marker in rows:
            [prompt] = [prompt for prompt in sent if marker in prompt]
            assert usage[row_id].requests == 1 and usage[row_id].misses == 1
            assert usage[row_id].prompt_tokens == len(prompt.split())  # the stub counts words


def test_azure_openai_paths_and_query_go_through_unchanged(stub_llm: StubLLM, tmp_path: Path) -> None:
    azure = Connection("azure_openai", "azure_openai", "chat", "my-deployment", f"http://127.0.0.1:{stub_llm.port}",
                       "azure-secret-key", api_version="2024-10-21")  # fmt: skip
    store = llm_proxy.CacheStore(tmp_path / "cache")
    for _ in range(2):
        with llm_proxy.LLMProxy(azure.base_url, store, RETRY, timeout_s=5) as proxy:
            binding = engine.LLMBinding(proxy.connection(azure), prompt="answer_chat.prompty")
            session = engine.FlowSession(REPO / "use_cases/general_qa/flows/answer", binding)
            assert session.run("r", {"question": "Capital of Peru?"}).error is None
    [sent] = stub_llm.requests()  # the second session was answered from the cache
    assert sent["path"] == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "azure-secret-key"
    [entry] = entries(tmp_path / "cache")
    assert entry["request"]["path"] == sent["path"] and b"azure-secret-key" not in json.dumps(entry).encode()


# The pipeline: the run and evaluate stages go through the proxy, the cache is a DVC output.


def llm_requests(stub: StubLLM) -> list[str]:
    return [json.dumps(r["body"].get("prompt") or r["body"].get("messages")) for r in stub.requests()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# A DAG flow, a prompty flow, and a flex flow whose evaluation has an LLM judge: every way a flow reaches the LLM.
LLM_USE_CASES = ("web_classification", "general_qa", "chat")
UC_ROWS, CHAT_ROWS = 72, 46  # the rows of the full datasets
JUDGES = ("Rate how relevant", "Rate how coherent", "Rate how fluent")  # chat's judges' prompts begin so


def test_the_session_build_asked_the_llm_once_per_row_and_per_judgement(reproduced_build: Reproduced) -> None:
    # A forced rerun then asks nothing, also in a fresh clone that pulls the caches through the Azure Blob remote
    # (tests/test_azure_remote.py).
    chat = reproduced_build.root / "data" / "chat"
    assert read_json(chat / "run" / "operations.json")["cache"] == {"hits": 0, "misses": CHAT_ROWS, "errors": 0}
    # Three judges per answer; a judgement asked twice (the fluency judge sees only the answer, and the stub's
    # answers repeat) is answered by the cache the second time.
    judged = read_json(chat / "eval" / "operations.json")["cache"]
    assert judged["hits"] + judged["misses"] == 3 * CHAT_ROWS and judged["errors"] == 0
    asked = [r for r in reproduced_build.requests if r["body"].get("prompt", "").startswith(JUDGES)]
    assert len(asked) == judged["misses"]


@pytest.mark.pipeline
def test_a_prompt_edit_asks_only_for_its_requests_and_reverting_it_is_free(
    reproduced: Project, stub_llm: StubLLM
) -> None:
    project, targets = reproduced, (f"report@{UC}", "report@chat")
    prompt = project.root / "use_cases" / UC / "flows" / "classify" / "classify_v1.jinja2"
    original = prompt.read_text()
    prompt.write_text(original.replace("exactly one category", "one category"))
    # The graph of three use cases: the edit reruns this use case's run, evaluate and report, nothing of the others.
    project.only(UC, "chat")
    repro = project.sh("dvc", "repro")
    assert set(ran_stages(repro.stdout + repro.stderr)) == {f"run@{UC}", f"evaluate@{UC}", f"report@{UC}"}
    # No warning of prompt flow's in the run's log (its token metrics once warned once per row: hooks.py)
    assert not re.search(r"execution[.\w]*\s+WARNING", repro.stdout + repro.stderr)
    new = llm_requests(stub_llm)
    assert len(new) == UC_ROWS and all("one category" in p and "exactly one category" not in p for p in new)

    prompt.write_text(original)
    assert f"run@{UC}" in project.repro(*targets)  # DVC reruns the stage (no run-cache with a persistent output)...
    assert len(stub_llm.requests()) == UC_ROWS  # ...and the LLM cache answers every request
    assert read_json(project.root / "data" / UC / "run" / "operations.json")["cache"]["hits"] == UC_ROWS

    # One of chat's three judges: only that judge is asked again; not the other two, not the chat flow.
    judge = project.root / "stages" / "metrics" / "rubrics" / "relevance.jinja2"
    judge.write_text(judge.read_text().replace("Relevance:", "Relevance score:"))
    ran = project.repro(*targets)
    assert {"code_evaluate", "evaluate@chat"} <= set(ran) and not [stage for stage in ran if "run" in stage]
    new = llm_requests(stub_llm)[UC_ROWS:]
    assert len(new) == CHAT_ROWS and all("Relevance score:" in p for p in new)
    assert read_json(project.root / "data" / "chat" / "eval" / "operations.json")["cache"]["hits"] == 2 * CHAT_ROWS


def test_appending_rows_asks_only_for_the_new_rows(reproduced: Project, stub_llm: StubLLM) -> None:
    project = reproduced  # every row of the dataset answered once already
    dataset = project.root / "use_cases" / UC / "data" / "pages.jsonl"
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert len(rows) == UC_ROWS
    added = [{**row, "url": f"{row['url']}?added={i}", "text": f"Added page {i}. {row['text']}"}
             for i, row in enumerate(rows[:7])]  # fmt: skip
    dataset.write_text(dataset.read_text() + "".join(json.dumps(row) + "\n" for row in added))
    project.sh("dvc", "repro", f"run@{UC}")
    new = llm_requests(stub_llm)
    assert len(new) == 7 and all(any(f"Added page {i}." in p for p in new) for i in range(7))
    summary = read_json(project.root / "data" / UC / "run" / "summary.json")
    operations = read_json(project.root / "data" / UC / "run" / "operations.json")
    assert summary["rows"] == 79 and operations["cache"] == {"hits": 72, "misses": 7, "errors": 0}


def test_a_run_killed_mid_way_resumes_from_the_cache(project: Project, stub_llm: StubLLM) -> None:
    stub_llm.faults(delay_s=0.05)  # slow enough to kill it mid-way
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = without_fork_server(project.env)  # DVC and its stage in one process group, killed at once below
    command = ["dvc", "repro", f"run@{UC}"]
    process = subprocess.Popen(command, cwd=project.root, env=env, start_new_session=True, **quiet)
    try:
        deadline = time.monotonic() + 300
        while len(stub_llm.requests()) < 25 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    seen = len(stub_llm.requests())
    assert 25 <= seen < 72, "the run was not killed mid-way"
    run = project.root / "data" / UC / "run"
    assert not (run / "outputs" / "v1.jsonl").exists()  # nothing half-written: no output yet
    cached = entries(run / "llm_cache")  # every entry parses, whole
    assert seen - 1 <= len(cached) <= seen  # at most the request in flight was lost
    cached_prompts = {json.dumps(entry["request"]["body"]["prompt"]) for entry in cached}

    stub_llm.faults()
    project.sh("dvc", "repro", f"run@{UC}")
    asked = set(llm_requests(stub_llm)[seen:])
    assert len(llm_requests(stub_llm)) - seen == 72 - len(cached)  # exactly the missing requests...
    assert not asked & cached_prompts  # ...none of those already answered
    rows = [json.loads(line) for line in (run / "outputs" / "v1.jsonl").read_text().splitlines()]
    assert len(rows) == 72 and all(row["error"] is None and row["outputs"]["category"] for row in rows)
    assert read_json(run / "operations.json")["cache"] == {"hits": len(cached), "misses": 72 - len(cached), "errors": 0}
    assert not list((run / "llm_cache").rglob(".*.tmp"))  # the successful rerun pruned a killed write's temp file


def test_llm_cache_enabled_false_asks_every_time(project: Project, stub_llm: StubLLM) -> None:
    project.params("llm_cache.enabled=false")
    project.sh("dvc", "repro", f"run@{UC}")
    project.sh("dvc", "repro", "-f", f"run@{UC}")
    assert len(stub_llm.requests()) == 2 * 72
    assert not any((project.root / "data" / UC / "run" / "llm_cache").iterdir())
