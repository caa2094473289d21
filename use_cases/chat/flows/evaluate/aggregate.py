import statistics

from promptflow.core import log_metric, tool

from stages.metrics.judge import mean_score


def chat_metrics(similarities: list[dict], verdicts: list[dict]) -> dict:
    """Mean similarity, share of similar answers, mean relevance over the judged rows, and judge errors."""
    metrics = {
        "similarity": round(statistics.fmean(s["similarity"] for s in similarities), 4),
        "similar": round(sum(s["similar"] for s in similarities) / len(similarities), 4),
        "relevance": mean_score(v["relevance"] for v in verdicts),
        "judge_errors": sum(1 for v in verdicts if v["relevance_error"]),
    }
    return {name: value for name, value in metrics.items() if value is not None}


@tool
def aggregate(similarities: list, verdicts: list) -> dict:
    metrics = chat_metrics(similarities, verdicts)
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
