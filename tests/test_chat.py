"""The chat use case on the stub LLM: the class-entry flow with history, and its evaluation (similarity + judges)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, StubLLM
from test_flows import load

from stages import engine
from stages.llm import connections
from stages.results import evaluation

FLOWS = REPO / "use_cases" / "chat" / "flows"
ITALY = {
    "inputs": {"question": "What is the capital of Italy?"},
    "outputs": {"answer": "Rome is the capital of Italy."},
}
BREAD = {"inputs": {"question": "I want to bake bread."}, "outputs": {"answer": "You need flour and yeast."}}
ASSISTANT = {"prompt": {"completion": "assistant.prompty", "chat": "assistant_chat.prompty"}}
JUDGES = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"]["chat"]["evaluate"]["judges"]


def stub_connection(stub: StubLLM, api: str) -> connections.Connection:
    return connections.Connection(name="local", type="openai", api=api, model="gemma-3-270m",
                                  base_url=stub.base_url, api_key="unused")  # fmt: skip


@pytest.fixture(autouse=True)
def quiet_prompt_flow(tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")


def test_the_assistant_answers_with_the_prior_turns_in_a_completion_transcript(stub_llm: StubLLM) -> None:
    stub_llm.script({"User: What river flows through it?": "The Tiber flows through Rome.\n"})
    binding = engine.binding_for(stub_connection(stub_llm, "completion"), {**ASSISTANT, "params": {"max_turns": 1}})
    session = engine.FlowSession(FLOWS / "assistant", binding)
    result = session.run("r1", {"question": "What river flows through it?", "chat_history": [BREAD, ITALY]})

    assert result.error is None and result.outputs == {"answer": "The Tiber flows through Rome."}
    prompt = stub_llm.requests()[-1]["body"]["prompt"]
    assert prompt.endswith(
        "\n\nUser: What is the capital of Italy?\nAssistant: Rome is the capital of Italy.\n"
        "User: What river flows through it?\nAssistant:"
    )
    assert "I want to bake bread." not in prompt  # max_turns=1 keeps the latest turn only
    assert stub_llm.requests()[-1]["body"]["stop"] == ["\n", "User:"]

    sample = json.loads((REPO / "use_cases" / "chat" / "sample-request.json").read_text())
    assert session.run("sample", sample).error is None  # what an endpoint test would send


def test_the_assistant_sends_role_messages_on_the_chat_api(stub_llm: StubLLM) -> None:
    stub_llm.script({"What river flows through it?": "The Tiber."})
    session = engine.FlowSession(FLOWS / "assistant", engine.binding_for(stub_connection(stub_llm, "chat"), ASSISTANT))
    assert session.run("r1", {"question": "What river flows through it?", "chat_history": [ITALY]}).outputs == {
        "answer": "The Tiber."
    }
    messages = stub_llm.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == [
        "What is the capital of Italy?", "Rome is the capital of Italy.", "What river flows through it?"
    ]  # fmt: skip

    broken = session.run("r2", {"question": "And then?", "chat_history": [{"inputs": {"question": "Hi"}}]})
    assert broken.outputs is None and "chat_history[0]: expected" in broken.error


def test_recent_turns_keeps_the_latest_and_checks_every_turn() -> None:
    recent_turns = load("use_cases/chat/flows/assistant/assistant.py").recent_turns
    assert recent_turns([BREAD, ITALY], 1) == [ITALY]
    assert recent_turns([BREAD, ITALY], 0) == [] and recent_turns([], 4) == []
    with pytest.raises(ValueError, match=r"chat_history\[1\]: expected"):
        recent_turns([BREAD, {"inputs": {"question": "Hi"}, "outputs": {"answer": 3}}], 4)


def judge_bindings(connection: connections.Connection) -> list[engine.LLMBinding]:
    """The chat use case's judges as its config describes them (rubrics of the shared library)."""
    return [engine.binding_for(connection, evaluation.judge_block(node, block), node=node)
            for node, block in JUDGES.items()]  # fmt: skip


def test_evaluation_scores_similarity_and_records_an_unreadable_judge_answer_as_an_error(stub_llm: StubLLM) -> None:
    stub_llm.script({
        "Answer: Bananas are yellow.\nRelevance:": "very relevant", "\nRelevance:": " 4",
        "Answer: Bananas are yellow.\nCoherence:": "3", "\nCoherence:": "5", "\nFluency:": "Fluency: 2",
    })  # fmt: skip
    session = engine.FlowSession(FLOWS / "evaluate", *judge_bindings(stub_connection(stub_llm, "completion")))
    question = {
        "question": "What river flows through it?",
        "chat_history": [ITALY],
        "reference": "The Tiber flows through Rome.",
    }
    rows = [{**question, "answer": "The Tiber river runs through Rome."}, {**question, "answer": "Bananas are yellow."}]
    good, bad = results = [session.run(f"r{i}", row) for i, row in enumerate(rows)]

    assert good.error is None and bad.error is None
    assert {name: good.outputs[name] for name in JUDGES} == {"relevance": 4, "coherence": 5, "fluency": 2}
    assert not any(good.outputs[f"{name}_error"] for name in JUDGES)
    assert good.outputs["similarity"] > 0.7 and good.outputs["similar"] is True
    assert bad.outputs["relevance"] is None  # an error for the row, never a score
    assert "very relevant' holds no score" in bad.outputs["relevance_error"]
    assert (bad.outputs["coherence"], bad.outputs["fluency"]) == (3, 2)
    assert bad.outputs["similarity"] < 0.3 and bad.outputs["similar"] is False
    prompts = [request["body"]["prompt"] for request in stub_llm.requests()]
    assert len(prompts) == 3 * len(rows)  # three judges a row
    assert sum(prompt.endswith(
        "Conversation:\nUser: What is the capital of Italy?\nAssistant: Rome is the capital of Italy.\n"
        "Question: What river flows through it?\nAnswer: The Tiber river runs through Rome.\nRelevance:"
    ) for prompt in prompts) == 1  # fmt: skip
    assert sum(prompt.endswith("\n\nAnswer: Bananas are yellow.\nFluency:") for prompt in prompts) == 1

    metrics = session.aggregate(results, rows)
    judged = {key: value for key, value in metrics.items() if key.split(".")[0] in JUDGES}
    assert judged == {  # the unreadable relevance answer is an error, not in the mean
        "relevance.scored": 1, "relevance.errors": 1, "relevance.mean": 4.0,
        "coherence.scored": 2, "coherence.errors": 0, "coherence.mean": 4.0,
        "fluency.scored": 2, "fluency.errors": 0, "fluency.mean": 2.0,
    }  # fmt: skip
    assert metrics["similar"] == 0.5
    assert metrics["similarity"] == pytest.approx(
        (good.outputs["similarity"] + bad.outputs["similarity"]) / 2, abs=1e-4
    )


def test_the_judges_send_their_chat_rubrics_on_the_chat_api(stub_llm: StubLLM) -> None:
    stub_llm.script({"Relevance:": "5", "Coherence:": "4", "Fluency:": "3"})
    session = engine.FlowSession(FLOWS / "evaluate", *judge_bindings(stub_connection(stub_llm, "chat")))
    row = {"question": "And its river?", "chat_history": [ITALY], "reference": "The Tiber.", "answer": "The Tiber."}
    result = session.run("r0", row)

    assert result.error is None
    assert {name: result.outputs[name] for name in JUDGES} == {"relevance": 5, "coherence": 4, "fluency": 3}
    conversations = [request["body"]["messages"] for request in stub_llm.requests()]
    assert len(conversations) == 3 and all([m["role"] for m in c] == ["system", "user"] for c in conversations)
    asks = sorted(messages[1]["content"].rsplit("\n", 1)[-1] for messages in conversations)
    assert asks == ["Coherence:", "Fluency:", "Relevance:"]
    assert all(c[0]["content"].endswith("Reply with one digit from 1 to 5 and nothing else.") for c in conversations)


def test_chat_metrics_report_each_judge_without_a_mean_when_it_scored_nothing() -> None:
    chat_metrics = load("use_cases/chat/flows/evaluate/aggregate.py").chat_metrics
    similarities = [{"similarity": 0.9, "similar": True}, {"similarity": 0.5, "similar": False}]
    unread = {"relevance": None, "relevance_error": "judge answer 'x' holds no score from 1 to 5"}
    assert chat_metrics(similarities, [unread, unread]) == {
        "similarity": 0.7, "similar": 0.5, "relevance.scored": 0, "relevance.errors": 2
    }  # fmt: skip
    assert chat_metrics(similarities, [{"relevance": 2, "relevance_error": None}, unread])["relevance.mean"] == 2.0
