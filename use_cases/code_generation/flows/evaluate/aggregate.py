from promptflow.core import log_metric, tool


def code_metrics(results: list[dict]) -> dict[str, float]:
    """pass@1 (rows whose tests all pass), the share of asserts passed, and rows that crashed or timed out."""
    if not results:
        raise ValueError("no rows to evaluate")
    count = len(results)
    total = sum(r["tests_total"] for r in results)
    metrics = {
        "pass_rate": sum(bool(r["passed"]) for r in results) / count,
        "assert_pass_rate": sum(r["tests_passed"] for r in results) / total if total else 0.0,
        "execution_error_rate": sum(r["status"] != "ok" for r in results) / count,
    }
    return {name: round(value, 4) for name, value in metrics.items()}


@tool
def aggregate(results: list) -> dict[str, float]:
    """Aggregation node: computes the run's metrics and logs each one to prompt flow."""
    metrics = code_metrics(results)
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
