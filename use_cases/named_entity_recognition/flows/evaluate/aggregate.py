from promptflow.core import log_metric, tool


def _prf(true_pos: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@tool
def aggregate(counts: list) -> dict:
    """Micro-averaged entity precision/recall/F1, exact and partial, plus the share of fully correct rows."""
    predicted = sum(c["predicted"] for c in counts)
    gold = sum(c["gold"] for c in counts)
    metrics = {}
    for kind in ("exact", "partial"):
        precision, recall, f1 = _prf(sum(c[f"{kind}_tp"] for c in counts), predicted, gold)
        metrics.update({f"{kind}_precision": precision, f"{kind}_recall": recall, f"{kind}_f1": f1})
    metrics["rows_all_correct"] = sum(c["all_correct"] for c in counts) / len(counts)
    metrics = {name: round(value, 4) for name, value in metrics.items()}
    for name, value in metrics.items():
        log_metric(name, value)
    return metrics
