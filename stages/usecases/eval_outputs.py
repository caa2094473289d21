"""Which output of an evaluation flow marks a row correct, and the headline metrics it gives: chosen from the
flow's declared output types when a use case is imported (the choice is reported, never silent)."""

from __future__ import annotations

from stages.usecases import flow_facts

_NUMBERS = ("int", "double", "float", "number")


def choose_correct(eval_facts: flow_facts.FlowFacts, where: str) -> tuple[str | None, dict[str, str], str]:
    """The evaluation output that is a row's correctness, the headline metrics, and why: from declared types
    (`where` names the flow file in messages)."""
    outputs = dict(eval_facts.outputs or {})
    if not outputs:
        return (
            None,
            {},
            (
                f"{where} declares no outputs: no per-row correctness, no headline metric; set "
                "report.correct and metrics in the config"
            ),
        )
    typed = list(outputs.items())
    for wanted, describe in ((("bool",), "bool"), (_NUMBERS, "number")):
        for name, kind in typed:
            if kind in wanted:
                metric = "accuracy" if describe == "bool" else name
                return (
                    name,
                    {metric: name},
                    (f"correct: {name} ({where} declares it {kind}); headline metric {metric}: the mean of {name}"),
                )
    name, kind = typed[0]
    if kind == "string":
        return (
            name,
            {name: name},
            (
                f"correct: {name} ({where} declares only {', '.join(f'{n}: {k}' for n, k in typed)}); headline metric "
                f"{name}: the mean of {name} read by the documented mapping of stock grades "
                "(stages/metrics/headline.py: Correct/Incorrect, pass/fail, yes/no as 1/0, numbers as numbers; any "
                "other text counts as no value); otherwise set metrics in the config"
            ),
        )
    return (
        name,
        {"accuracy": name},
        (
            f"correct: {name} ({where} declares it {kind or 'untyped'}); headline metric accuracy: the mean of "
            f"{name} read by the documented mapping (stages/metrics/headline.py): an object by its first number (the "
            f"stock entity match's match_cnt: exact_match), a grade string as 1/0; to read another number, set "
            f"metrics: {{<name>: {name}.<key>}} (dotted paths) in the config"
        ),
    )
