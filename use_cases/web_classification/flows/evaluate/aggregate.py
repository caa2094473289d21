from promptflow.core import log_metric, tool


def classification_metrics(groundtruths: list[str], predictions: list[str]) -> dict[str, float]:
    """Accuracy, macro precision/recall and per-class precision/recall over the ground-truth classes.

    A class that is never predicted gets precision 0.0 (as scikit-learn's zero_division=0).
    """
    pairs = [(g.strip().lower(), p.strip().lower()) for g, p in zip(groundtruths, predictions, strict=True)]
    if not pairs:
        raise ValueError("no rows to evaluate")
    names = {g.strip().lower(): g.strip() for g in groundtruths}
    metrics: dict[str, float] = {"accuracy": sum(g == p for g, p in pairs) / len(pairs)}
    precisions, recalls = [], []
    for key in sorted(names):
        true_pos = sum(g == key and p == key for g, p in pairs)
        predicted = sum(p == key for _, p in pairs)
        actual = sum(g == key for g, _ in pairs)
        precision = true_pos / predicted if predicted else 0.0
        recall = true_pos / actual
        metrics[f"precision.{names[key]}"] = precision
        metrics[f"recall.{names[key]}"] = recall
        precisions.append(precision)
        recalls.append(recall)
    metrics["macro_precision"] = sum(precisions) / len(precisions)
    metrics["macro_recall"] = sum(recalls) / len(recalls)
    return {name: round(value, 4) for name, value in metrics.items()}


@tool
def aggregate(groundtruths: list[str], predictions: list[str]) -> dict[str, float]:
    """Aggregation node: computes the run's metrics and logs each one to prompt flow."""
    metrics = classification_metrics(groundtruths, predictions)
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
