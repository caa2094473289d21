from promptflow.core import tool


def _key(entity: dict) -> tuple[str, str]:
    return entity["type"].strip().lower(), " ".join(entity["text"].lower().split())


def _overlaps(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Same type, and one text contains the other ("Lena Sorel" ~ "Dr. Lena Sorel")."""
    return a[0] == b[0] and (a[1] in b[1] or b[1] in a[1])


def _greedy_matches(gold: list[tuple[str, str]], predicted: list[tuple[str, str]], same) -> int:
    """Count one-to-one matches: each gold entity pairs with at most one prediction."""
    unused = list(predicted)
    matched = 0
    for entity in gold:
        for index, guess in enumerate(unused):
            if same(entity, guess):
                matched += 1
                del unused[index]
                break
    return matched


@tool
def match(gold: list, predicted: list) -> dict:
    """True positives (exact and partial), predicted and gold counts for one row."""
    gold_keys = list(dict.fromkeys(_key(e) for e in gold))
    predicted_keys = list(dict.fromkeys(_key(e) for e in predicted))
    exact = _greedy_matches(gold_keys, predicted_keys, lambda a, b: a == b)
    partial = _greedy_matches(gold_keys, predicted_keys, _overlaps)
    return {
        "exact_tp": exact,
        "partial_tp": partial,
        "predicted": len(predicted_keys),
        "gold": len(gold_keys),
        "all_correct": exact == len(gold_keys) == len(predicted_keys),
    }
