from promptflow.core import log_metric, tool


@tool
def aggregate(grades: list) -> dict:
    """Exact-match and lenient (answer contained) rates over the evaluated rows."""
    metrics = {
        "exact_match": round(sum(g["exact"] for g in grades) / len(grades), 4),
        "contains_match": round(sum(g["contains"] for g in grades) / len(grades), 4),
    }
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
