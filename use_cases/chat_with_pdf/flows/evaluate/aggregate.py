import statistics

from promptflow.core import log_metric, tool

from stages.metrics import judge, retrieval


def rag_metrics(grades: list[dict], verdicts: list[dict]) -> dict[str, float | int]:
    """Hit rate and MRR of the gold passage, mean answer similarity, share of similar answers, and the judge's
    `groundedness.{mean, scored, errors}` (unparseable answers are counted, not scored).
    """
    if not grades:
        raise ValueError("no rows to evaluate")
    ranks = [g["rank"] for g in grades]
    return {
        "hit_rate": round(retrieval.hit_rate(ranks), 4),
        "mrr": round(retrieval.mean_reciprocal_rank(ranks), 4),
        "similarity": round(statistics.fmean(g["similarity"] for g in grades), 4),
        "answer_match": round(sum(g["correct"] for g in grades) / len(grades), 4),
        **judge.judge_metrics(verdicts),
    }


@tool
def aggregate(grades: list, verdicts: list) -> dict:
    """Aggregation node: computes the run's metrics and logs each one to prompt flow."""
    metrics = rag_metrics(grades, verdicts)
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
