"""Text-overlap metrics for generated answers: exact match, token F1 (SQuAD-style), ROUGE-L, BLEU and chrF.

ROUGE-L comes from `rouge-score` and BLEU/chrF from `sacrebleu` (the reference implementations); scores are
per row in [0, 1], so every metric aggregates as a mean with a bootstrap CI.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_ARTICLES = re.compile(r"\b(the|a|an)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and English articles, squeeze spaces: 'The Nile.' -> 'nile'."""
    return " ".join(_ARTICLES.sub(" ", _PUNCTUATION.sub(" ", (text or "").lower())).split())


def exact_match(prediction: str, references: Iterable[str]) -> bool:
    """The normalized prediction equals one of the normalized (non-empty) references."""
    accepted = {normalize(r) for r in references} - {""}
    return normalize(prediction) in accepted


def contains_match(prediction: str, references: Iterable[str]) -> bool:
    """One of the normalized references appears as whole words in the normalized prediction."""
    guess = normalize(prediction)
    return any(re.search(rf"\b{re.escape(r)}\b", guess) for r in {normalize(r) for r in references} - {""})


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalized tokens (1.0 when both are empty)."""
    guess, truth = normalize(prediction).split(), normalize(reference).split()
    if not guess or not truth:
        return float(guess == truth)
    common = sum((Counter(guess) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(guess), common / len(truth)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed tokens)."""
    return float(_rouge().score(reference or "", prediction or "")["rougeL"].fmeasure)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing), scaled to [0, 1]."""
    from sacrebleu.metrics import BLEU

    return float(BLEU(effective_order=True).sentence_score(prediction or "", [reference or ""]).score) / 100


def chrf(prediction: str, reference: str) -> float:
    """Sentence chrF (sacrebleu character n-gram F-score), scaled to [0, 1]."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(prediction or "", [reference or ""]).score) / 100
