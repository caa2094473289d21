from promptflow.core import log_metric, tool


@tool
def answered_rate(answered: list) -> dict:
    value = round(sum(answered) / len(answered), 4) if answered else 0.0
    log_metric("answered_rate", value)
    return {"answered_rate": value}
