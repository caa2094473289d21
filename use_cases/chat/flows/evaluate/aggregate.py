import statistics

from promptflow.core import log_metric, tool

from stages.metrics import judge


def chat_metrics(similarities: list[dict], verdicts: list[dict]) -> dict[str, float | int]:
    """Mean similarity, share of similar answers, and each judge's `<judge>.{mean, scored, errors}`."""
    return {
        "similarity": round(statistics.fmean(s["similarity"] for s in similarities), 4),
        "similar": round(sum(s["similar"] for s in similarities) / len(similarities), 4),
        **judge.judge_metrics(verdicts),
    }


@tool
def aggregate(similarities: list, verdicts: list) -> dict:
    metrics = chat_metrics(similarities, verdicts)
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
