from promptflow.core import log_metric, tool


@tool
def aggregate(grades: list) -> dict:
    """Mean exact match, lenient (answer contained) match, token F1 and ROUGE-L over the evaluated rows."""
    metrics = {
        "exact_match": sum(g["exact"] for g in grades) / len(grades),
        "contains_match": sum(g["contains"] for g in grades) / len(grades),
        "token_f1": sum(g["token_f1"] for g in grades) / len(grades),
        "rouge_l": sum(g["rouge_l"] for g in grades) / len(grades),
    }
    metrics = {name: round(value, 4) for name, value in metrics.items()}
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
