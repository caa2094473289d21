"""The metrics library: judge parsing, retrieval ranks, embedding similarity (the real MiniLM model)."""

from __future__ import annotations

import pytest

from stages.metrics import judge, retrieval, similarity


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
