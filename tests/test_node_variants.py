"""Prompt flow node variants in a DAG flow (chat_with_pdf: `rewrite` x `answer`), selected per node from conf."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project, StubLLM
from test_chat import stub_connection
from test_chat_with_pdf import CHUNKING, tracked_passages

from stages import engine
from stages.core import variants
from stages.data import documents, embeddings, vector_index
from stages.results import bulk

UC = "chat_with_pdf"
FLOW = REPO / "use_cases" / UC / "flows" / "chat"
USE_CASE = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"][UC]
QUESTION = "How long is the frame of a Kestrel bike covered by the warranty?"
# Both rewrite variants give the same search text, so retrieval, and hence the answer prompt, stays the same.
SAME_SEARCH = {"Keywords:": "frame warranty years", "Sentence:": "frame warranty years"}


@pytest.fixture(autouse=True)
def quiet_prompt_flow(tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")


@pytest.fixture(scope="module")
def rag_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding a copy of the flow with its vector index built (in the repo the index is a `dvc repro` output,
    absent from a fresh clone)."""
    root = tmp_path_factory.mktemp("rag")
    flow = root / USE_CASE["flow"]
    shutil.copytree(FLOW, flow, ignore=shutil.ignore_patterns("index", "__pycache__", ".promptflow"))
    chunks = [c.to_dict() for c in documents.chunk(tracked_passages(), CHUNKING["words"], CHUNKING["overlap"])]
    vector_index.write(flow / "index", chunks, embeddings.encode([c["text"] for c in chunks]), embeddings.MODEL_NAME)
    return root


def prompts(root: Path, stub: StubLLM, api: str, selection: dict[str, str]) -> tuple[str, str]:
    """The (rewrite, answer) prompts one row sends with these node variants selected."""
    connection = stub_connection(stub, api)
    session = bulk.open_session(root, UC, {**USE_CASE, "node_variants": selection}, "v1", "v1", connection, 60)
    before = len(stub.requests())
    result = session.run("r1", {"question": QUESTION})
    assert result.error is None, result.error
    assert session.node_variants == {"rewrite": "variant_0", "answer": "variant_0", **selection}
    sent = [request["body"] for request in stub.requests()[before:]]
    assert len(sent) == 2
    key = "prompt" if api == "completion" else "messages"
    rewrite, answer = (json.dumps(body[key]) for body in sent)  # the DAG runs rewrite before answer
    return rewrite, answer


def test_a_node_variant_changes_exactly_the_prompt_of_its_node(rag_root: Path, stub_llm: StubLLM) -> None:
    stub_llm.script(SAME_SEARCH)
    rewrite, answer = prompts(rag_root, stub_llm, "completion", {})
    assert "Keywords:" in rewrite and "Answer the question with a few words from the context." in answer
    assert "warranty" in answer  # the retrieved context reached the answer prompt

    hyde_rewrite, hyde_answer = prompts(rag_root, stub_llm, "completion", {"rewrite": "variant_1"})
    assert "Sentence:" in hyde_rewrite and hyde_rewrite != rewrite
    assert hyde_answer == answer

    brief_rewrite, brief_answer = prompts(rag_root, stub_llm, "completion", {"answer": "variant_1"})
    assert brief_rewrite == rewrite
    assert "using only the context above" in brief_answer and brief_answer != answer

    both = prompts(rag_root, stub_llm, "completion", {"rewrite": "variant_1", "answer": "variant_1"})
    assert both == (hyde_rewrite, brief_answer)


def test_on_a_chat_connection_node_variants_use_their_chat_templates(rag_root: Path, stub_llm: StubLLM) -> None:
    stub_llm.script(SAME_SEARCH)
    rewrite, answer = prompts(rag_root, stub_llm, "chat", {"rewrite": "variant_1"})
    assert "the sentence is only used to search the handbook" in rewrite  # rewrite_hyde.chat.jinja2
    assert "using only the context you are given" in answer  # answer.chat.jinja2
    assert all(r["path"].endswith("/chat/completions") for r in stub_llm.requests())


def test_the_override_applies_to_the_selected_variant_only() -> None:
    use_case = {**USE_CASE, "variant": "v2", "node_variants": {"rewrite": "variant_1", "answer": None}}
    assert variants.node_variants(UC, use_case, "v1", "v2") == {
        "rewrite": ("variant_0", f"use_cases.{UC}.variants.v1.node_variants.rewrite"),
        "answer": ("variant_0", f"use_cases.{UC}.variants.v1.node_variants.answer"),
    }
    assert variants.node_variants(UC, use_case, "v2", "v2") == {
        "rewrite": ("variant_1", f"use_cases.{UC}.node_variants.rewrite"),
        "answer": ("variant_0", f"use_cases.{UC}.variants.v2.node_variants.answer"),
    }
    with pytest.raises(variants.VariantError, match=rf"use_cases\.{UC}\.node_variants\.answer: expected a variant"):
        variants.node_variants(UC, {**use_case, "node_variants": {"answer": 1}}, "v2", "v2")


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"answr": "variant_1"}, r"node_variants\.answr \(conf/use_cases/chat_with_pdf\.yaml\): .*flow\.dag\.yaml: "
                                 r"no node 'answr' \(nodes: answer, finish, retrieve, rewrite\)"),
        ({"retrieve": "variant_1"}, r"node_variants\.retrieve \(conf/use_cases/chat_with_pdf\.yaml\): .*flow\.dag"
                                    r"\.yaml: node 'retrieve' has no node_variants \(nodes with variants: answer, "
                                    r"rewrite\)"),
        ({"answer": "variant_9"}, r"node_variants\.answer \(conf/use_cases/chat_with_pdf\.yaml\): .*flow\.dag\.yaml: "
                                  r"node 'answer' has no variant 'variant_9' \(has variant_0, variant_1\)"),
    ],
)  # fmt: skip
def test_an_unknown_node_or_variant_id_names_the_key_and_the_flow(
    stub_llm: StubLLM, selection: dict[str, str], message: str
) -> None:
    with pytest.raises(engine.FlowError, match=rf"^use_cases\.{UC}\.{message}"):
        bulk.open_session(
            REPO, UC, {**USE_CASE, "node_variants": selection}, "v1", "v1", stub_connection(stub_llm, "completion"), 60
        )
    # the same from a variant's own node_variants names that variant's key
    own = {
        **USE_CASE,
        "variants": {**USE_CASE["variants"], "v2": {**USE_CASE["variants"]["v2"], "node_variants": selection}},
    }
    with pytest.raises(engine.FlowError, match=rf"^use_cases\.{UC}\.variants\.v2\.{message}"):
        bulk.open_session(REPO, UC, own, "v2", "v1", stub_connection(stub_llm, "completion"), 60)
    assert stub_llm.requests() == []


def test_a_prompt_for_a_node_with_variants_is_refused(stub_llm: StubLLM) -> None:
    block = {**USE_CASE["variants"]["v1"], "prompt": "answer_brief.jinja2"}
    use_case = {**USE_CASE, "variants": {"v1": block}}
    with pytest.raises(engine.FlowError, match=r"node 'answer' takes its prompt from its node_variants"):
        bulk.open_session(REPO, UC, use_case, "v1", "v1", stub_connection(stub_llm, "completion"), 60)


@pytest.mark.pipeline
def test_a_queued_sweep_queues_every_combination_of_node_variants_and_runs_them(
    reproduced: Project, stub_llm: StubLLM
) -> None:
    project = reproduced  # the documents' index is built already
    config = project.root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- env: dev", "- env: pr"))  # 12 rows; `dvc exp run` composes conf/
    project.only(UC)
    assert project.repro(f"prepare@{UC}") == [f"prepare@{UC}"]  # the baseline commit holds what the run stage reads
    project.commit("pr rows")
    sweep = [f"use_cases.{UC}.node_variants.{node}=variant_0,variant_1" for node in ("rewrite", "answer")]
    # Without the LLM cache, which holds variant_0's answers from the session's run: every prompt reaches the stub.
    nocache = ("-S", "llm_cache.enabled=false")
    queued = project.sh("dvc", "exp", "run", "--queue", f"run@{UC}", "-S", sweep[0], "-S", sweep[1], *nocache).stdout
    assert queued.count("Queued experiment") == 4, queued

    def experiments() -> dict[tuple[str, str], dict]:
        """(rewrite, answer) -> the experiment's `dvc exp show` entry, for each experiment of the baseline."""
        shown = json.loads(project.sh("dvc", "exp", "show", "--json").stdout)
        found = {}
        for experiment in (e for baseline in shown for e in baseline.get("experiments") or []):
            data = experiment["revs"][0]["data"]
            node_variants = data["params"]["params.yaml"]["data"]["use_cases"][UC]["node_variants"]
            found[(node_variants["rewrite"], node_variants["answer"])] = {**experiment, "data": data}
        return found

    # The queue holds every combination, each with its own params.
    every = {(r, a) for r in ("variant_0", "variant_1") for a in ("variant_0", "variant_1")}
    waiting = experiments()
    assert set(waiting) == every and {e["executor"]["state"] for e in waiting.values()} == {"queued"}
    # Two of them run (between them every variant of each node); the other two leave the queue unrun.
    run_now = {("variant_0", "variant_1"), ("variant_1", "variant_0")}
    project.sh("dvc", "queue", "remove", *(waiting[pair]["name"] for pair in every - run_now))
    # The queue's worker is a daemon that inherits stdout: capturing it would wait for the daemon to exit.
    subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=project.root, env=project.env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
    try:
        # Wait cheaply: a finished experiment is a git ref (a `git` call), while each `dvc queue status` loads the
        # repo (seconds of CPU); the queue's status is read every 10 s only, to see a failed experiment in time.
        deadline, polls, status = time.monotonic() + 600, 0, ""
        while True:
            refs = project.sh("git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout
            done = len(re.findall(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/", refs, re.M))
            if done == len(run_now) or polls % 10 == 9:
                status = project.sh("dvc", "queue", "status").stdout
                if not re.search(r"\b(Queued|Running)\b", status):
                    break
            assert time.monotonic() < deadline, status
            polls += 1
            time.sleep(1)
    finally:
        project.sh("dvc", "queue", "stop", check=False)
    failed = re.findall(r"^(\w+)\s.*\bFailed$", status, re.M)
    assert status.count("Success") == 2, status + "".join(project.sh("dvc", "queue", "logs", t).stdout for t in failed)

    ran = experiments()
    assert set(ran) == run_now  # the removed ones are gone, not run
    for (rewrite, answer), experiment in ran.items():
        summary = experiment["data"]["metrics"][f"data/{UC}/run/summary.json"]["data"]
        assert summary["node_variants"] == {"rewrite": rewrite, "answer": answer}
        assert summary["rows"] == 12 and summary["errors"] == 0
    sent = {request["body"]["prompt"] for request in stub_llm.requests()}
    # Each node's two prompts reached the stub for every row: 12 per rewrite variant, both answer variants seen.
    assert len({p for p in sent if p.endswith("Keywords:")}) == len({p for p in sent if p.endswith("Sentence:")}) == 12
    assert any("a few words from the context." in p for p in sent) and any("the context above." in p for p in sent)
