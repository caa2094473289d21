"""Evaluation: a use case's evaluation flow over each variant's run outputs and the ground truth (its judges bound
to the judge LLM through the LLM proxy), the joined rows, the flow's metrics with row counts, and the headline
metrics with confidence intervals and the comparison with the baseline. Used by the `evaluate` stage and by
production evaluation (stages/deploy/production.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import engine
from stages.core.progress import Progress
from stages.core.project import runtime_dir
from stages.llm import connections, llm_proxy
from stages.metrics import cost, headline, judge, repeats
from stages.results.formatting import rejected_note


def map_inputs(mapping: dict[str, str], row: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Build the evaluation flow's inputs: `data.<column>` reads the prepared row, `outputs.<name>` the run."""
    inputs = {}
    for name, source in mapping.items():
        scope, _, key = source.partition(".")
        if scope not in ("data", "outputs") or not key:
            raise ValueError(f"evaluate.mapping.{name}: expected 'data.<column>' or 'outputs.<name>', got {source!r}")
        inputs[name] = (row if scope == "data" else outputs)[key]
    return inputs


def joined_rows(
    prepared: list[dict[str, Any]], run_by_key: dict[tuple[str, int], dict[str, Any]],
    eval_by_key: dict[tuple[str, int], engine.RowResult], k: int = 1,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every prepared row (each of its k repeats) with its run outputs and its evaluation (None where the row never
    got that far)."""
    for row in prepared:
        for repeat in range(k):
            run = run_by_key[(row["row_id"], repeat)]
            evaluation = eval_by_key.get((row["row_id"], repeat))
            yield {
                **row,
                **repeats.field(repeat, k),
                "outputs": run["outputs"],
                "run_error": run["error"],
                "latency_s": run["latency_s"],
                "eval": evaluation.outputs if evaluation else None,
                "eval_error": evaluation.error if evaluation else None,
                **({"warnings": run["warnings"]} if run.get("warnings") else {}),
                **({"eval_warnings": list(evaluation.warnings)} if evaluation and evaluation.warnings else {}),
            }


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'precision.App': 1} -> {'precision': {'App': 1}}, so `dvc metrics` groups per-class values."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def judge_block(node: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """A judge's config block (`evaluate.judges.<node>`) with its `rubric`, a name in the rubric library, turned
    into that rubric's prompt files; a block without one keeps its own `prompt` (or the node's template)."""
    if "rubric" not in block:
        return dict(block)
    if "prompt" in block:
        raise engine.FlowError(f"evaluate.judges.{node}: give a rubric or a prompt, not both")
    try:
        return {**block, "prompt": judge.rubric_prompt(block["rubric"])}
    except judge.UnknownRubric as exc:
        raise engine.FlowError(f"evaluate.judges.{node}.rubric: {exc}") from None


def judge_bindings(judges: dict[str, Any], connection: connections.Connection) -> list[engine.LLMBinding]:
    """Bind each judge node of the evaluation flow (`evaluate.judges.<node>`) to the judge connection."""
    return [engine.binding_for(connection, judge_block(node, block), node=node) for node, block in judges.items()]


def evaluate_variant(
    sessions: Sequence[engine.FlowSession], name: str, variant: str, use_case: dict[str, Any],
    prepared: list[dict[str, Any]], run_rows: list[dict[str, Any]], proxy: llm_proxy.LLMProxy | None = None,
    price: cost.Price | None = None, concurrency: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[engine.RowResult]]:  # fmt: skip
    """One variant's joined rows, its flow-logged metrics with row counts (and the judge calls' LLM cache counts,
    tokens and cost, through `proxy`), and the rows the eval flow failed that fail the stage: a row whose judge
    request the LLM rejected for its content (`Usage.rejected`: a prompt longer than the model's context) is an
    error of that row only, counted in `eval_errors` and in `judge_rejected`, and said. Repeat r of a row is
    evaluated by `sessions[r]` (its judges ask through the proxy's `/r<r>` prefix); the flow's own metrics pool every
    repeat. `concurrency` rows are evaluated at once."""
    k = len(sessions)
    run_by_key = {(row["row_id"], repeats.of(row)): row for row in run_rows}
    evaluable = [(row, repeat) for row in prepared for repeat in range(k)
                 if run_by_key[(row["row_id"], repeat)]["error"] is None]  # fmt: skip
    eval_inputs = [
        map_inputs(use_case["evaluate"]["mapping"], row, run_by_key[(row["row_id"], repeat)]["outputs"])
        for row, repeat in evaluable
    ]
    progress = Progress(f"evaluate {name} {variant}", len(evaluable))
    before = proxy.totals() if proxy else None
    completed: dict[str, engine.RowResult] = {}
    rejected: set[str] = set()  # rows whose judge request the LLM rejected for its content (e.g. too long)
    for repeat, session in enumerate(sessions):
        flow_rows = [(repeats.tag(row["row_id"], repeat, k), inputs)
                     for (row, r), inputs in zip(evaluable, eval_inputs, strict=True) if r == repeat]  # fmt: skip
        for result in session.run_rows(flow_rows, concurrency):
            completed[result.row_id] = result
            usage = proxy.row_usage(result.row_id) if proxy else None
            if usage and usage.rejected and result.error:
                rejected.add(result.row_id)
            progress.advance(error=result.error is not None, cache_hits=usage.hits if usage else 0)
    results = [completed[repeats.tag(row["row_id"], repeat, k)] for row, repeat in evaluable]  # input order
    eval_by_key = {(row["row_id"], repeat): result for (row, repeat), result in zip(evaluable, results, strict=True)}
    try:
        metrics = sessions[0].aggregate(results, eval_inputs) if evaluable else {}
    except engine.AggregationError as exc:  # the flow's own code: recorded and said, the rows still count
        metrics = {"aggregation_error": str(exc)}
        print(f"evaluate {name} {variant}: warning: {exc}; the metrics it logs are missing, the headline metrics are "
              "computed from the evaluated rows", file=sys.stderr)  # fmt: skip
    errors = [r for r in results if r.error]
    metrics.update({"rows": len(results) - len(errors), "run_errors": len(prepared) * k - len(evaluable),
                    "eval_errors": len(errors)})  # fmt: skip
    if rejected:
        metrics["judge_rejected"] = len(rejected)
        print(f"evaluate {name} {variant}: warning: {rejected_note(len(rejected), len(results))}; first: "
              f"{next(r.error for r in errors if r.row_id in rejected)}", file=sys.stderr)  # fmt: skip
    failed = [r for r in errors if r.row_id not in rejected]
    if k > 1:
        metrics["repeats"] = k
    joined = list(joined_rows(prepared, run_by_key, eval_by_key, k))
    nested = nest(metrics)
    if proxy and before:  # the judge calls
        usage = (proxy.totals() - before).as_metrics()
        nested.update(usage, cost=cost.cost_metrics(usage["tokens"], price))
    return joined, nested, failed


class JudgeError(ValueError):
    """A judge that cannot be bound to the evaluation flow (`evaluate.judges.<node>`); the message names it."""


@dataclass
class Judging:
    """The judge LLM of an evaluation: its proxy (None for a flow that asks no LLM), connection and price."""

    proxy: llm_proxy.LLMProxy | None = None
    connection: connections.Connection | None = None
    price: cost.Price | None = None


def judging(params: Mapping[str, Any], use_case: Mapping[str, Any], root: Path, cache: Path, label: str,
            needed: bool, bridge_chat: bool = False) -> Judging:  # fmt: skip
    """The judge LLM through an LLM proxy caching in `cache`, when the flow has judges or takes `model_config`
    (`needed`); `bridge_chat` for a MAF evaluation workflow (its clients speak chat or the Responses API). Raises
    connections.ConnectionConfigError, cost.PriceError."""
    if not needed:
        return Judging()
    connection = connections.resolve(params["judge"], connections.environment(root))
    connections.check_reachable(connection)
    json_answers = bool(use_case["evaluate"].get("json_answers"))  # the flow parses the judge's answer as JSON
    proxy = llm_proxy.from_params(connection, params["judge"], params["llm_cache"], cache, row_of=engine.row_of_request,
                                  bridge_chat=bridge_chat, json_answers=json_answers)  # fmt: skip
    price = cost.price_for(params["prices"], connection.model)
    if price is None:
        print(cost.unpriced_warning(f"{label}: judge", connection.model), file=sys.stderr)
    return Judging(proxy, connection, price)


def open_sessions(flow: Path, judges: Mapping[str, Any], judge: Judging, model_config: bool, k: int,
                  row_timeout_s: float | None, copies: Path | None = None) -> list[engine.FlowSession]:  # fmt: skip
    """One evaluation flow session per repeat (repeat r's judges ask through the proxy's `/r<r>` prefix); a flow
    without judges asks no LLM: one session serves every repeat. With `copies` (the runtime folder) the flow loads
    from its copy there, as the run stage's (engine.run_copy). Raises engine.FlowError."""
    sessions = []
    for repeat in range(k if judge.proxy else 1):
        judged = judge.proxy.connection(judge.connection, repeat) if judge.proxy and judge.connection else None
        try:
            bindings = judge_bindings(dict(judges), judged) if judged and judges else []
        except engine.FlowError as exc:
            raise JudgeError(str(exc)) from None
        if judged and model_config:
            bindings = [engine.LLMBinding(judged)]
        sessions.append(engine.FlowSession(flow, *bindings, row_timeout_s=row_timeout_s, copies=copies))
    return sessions * (k // len(sessions))


def combined_metrics(
    metrics_by_variant: dict[str, dict[str, Any]], rows_by_variant: dict[str, list[dict[str, Any]]],
    specs: list[Any], plan: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The selected variant's metrics with every variant's headline results (the others under `variants`), and
    the headline results by variant."""
    results = headline.headline(specs, rows_by_variant, plan.baseline)
    for variant, by_metric in results.items():
        metrics_by_variant[variant]["headline"] = {metric: r.as_dict() for metric, r in by_metric.items()}
    metrics = {**metrics_by_variant[plan.selected], "variant": plan.selected, "baseline": plan.baseline}
    if len(plan.names) > 1:
        metrics["variants"] = {name: m for name, m in metrics_by_variant.items() if name != plan.selected}
    return metrics, results


def summary_lines(label: str, metrics_by_variant: dict[str, dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """Per variant: its top-level numbers and each judge's mean and error count, then each headline metric."""
    lines = []
    for variant, variant_metrics in metrics_by_variant.items():
        # Top-level numbers and each judge's mean and error count; per-class values only in the metrics file.
        flat = {k: v for k, v in variant_metrics.items() if not isinstance(v, dict)}
        flat |= {f"{k}.{part}": v[part] for k, v in variant_metrics.items()
                 if isinstance(v, dict) and "errors" in v for part in ("errors", "mean") if part in v}  # fmt: skip
        lines.append(f"{label} {variant}: {', '.join(f'{k}={v}' for k, v in flat.items())}")
        lines += [f"  {metric}: {headline.describe(result)}" for metric, result in results.get(variant, {}).items()]
    return lines


class SetupError(ValueError):
    """The evaluation cannot start (its flow does not load, a bad variant, metric, price or judge); the message
    names what."""


@dataclass
class Setup:
    """What an evaluation stage runs with: the variants, the judge LLM and how many rows it takes at once, the
    headline metrics, the flow's judges and whether the flow takes the judge's `model_config`."""

    plan: Any  # stages.core.variants.Plan
    judge: Judging
    concurrency: int
    specs: list[headline.MetricSpec]
    judges: Mapping[str, Any]
    model_config: bool


def setup(params: Mapping[str, Any], name: str, root: Path, cache: Path, label: str) -> Setup:
    """The evaluation of use case `name` ready to run, its judge LLM's proxy caching in `cache` (created either
    way: the stage's output). Raises SetupError."""
    from stages.core import variants
    from stages.engine.maf import is_maf_flow

    use_case = params["use_cases"][name]
    judges = use_case["evaluate"].get("judges") or {}
    cache.mkdir(parents=True, exist_ok=True)
    try:  # a flex evaluator taking `model_config` (a class's init, a function's parameter) gets the judge's LLM
        model_config = engine.declares_model_config(root / use_case["eval_flow"])
        eval_is_maf = is_maf_flow(root / use_case["eval_flow"])  # a MAF evaluation workflow gets the judge's LLM too
        model_config = model_config or eval_is_maf
    except Exception as exc:  # the entry's module failed to load: its own error, not a traceback
        raise SetupError(f"{use_case['eval_flow']}: {type(exc).__name__}: {exc}") from None
    try:
        plan = variants.plan_for(params, name)
        concurrency = connections.concurrency(params["judge"], "judge")  # the judge's, also for flows without one
        specs = headline.parse_specs(use_case.get("metrics"), f"use_cases.{name}.metrics")
        judge = judging(params, use_case, root, cache, label, bool(judges or model_config), bridge_chat=eval_is_maf)
    except (variants.VariantError, headline.MetricSpecError, cost.PriceError) as exc:
        raise SetupError(str(exc)) from None
    except connections.ConnectionConfigError as exc:
        raise SetupError(f"judge: {exc}") from None
    return Setup(plan, judge, concurrency, specs, judges, model_config)


def evaluate_variants(
    sessions: Sequence[engine.FlowSession], name: str, use_case: dict[str, Any], ready: Setup,
    prepared: list[dict[str, Any]], run_by_variant: Mapping[str, list[dict[str, Any]]],
    written: Callable[[str, list[dict[str, Any]]], None],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], list[tuple[str, engine.RowResult]]]:  # fmt: skip
    """Every variant of the plan evaluated (`evaluate_variant`), its rows handed to `written` as soon as they are
    done; the rows and metrics by variant, and the failed rows with their variant."""
    from stages.observability import tracing

    rows_by_variant: dict[str, list[dict[str, Any]]] = {}
    metrics_by_variant: dict[str, dict[str, Any]] = {}
    failed: list[tuple[str, engine.RowResult]] = []
    for variant in ready.plan.names:
        tracing.set_attributes(use_case=name, variant=variant, stage="evaluate")
        rows_by_variant[variant], metrics_by_variant[variant], bad = evaluate_variant(
            sessions, name, variant, use_case, prepared, run_by_variant[variant], ready.judge.proxy,
            ready.judge.price, ready.concurrency,
        )  # fmt: skip
        failed += [(variant, result) for result in bad]
        written(variant, rows_by_variant[variant])
    return rows_by_variant, metrics_by_variant, failed


def evaluate_all(
    root: Path, params: Mapping[str, Any], name: str, ready: Setup, prepared: list[dict[str, Any]],
    run_by_variant: Mapping[str, list[dict[str, Any]]], traces: Path | None,
    written: Callable[[str, list[dict[str, Any]]], None],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], list[tuple[str, engine.RowResult]]]:  # fmt: skip
    """The evaluation flow opened (one session per repeat) and run over every variant (`evaluate_variants`), traced
    to `traces`, through the judge's proxy. Raises SetupError when the flow or a judge does not load."""
    import contextlib

    from stages.observability import pii, tracing

    use_case = params["use_cases"][name]
    k = max(repeats.in_records(rows) for rows in run_by_variant.values())
    telemetry = tracing.setup(f"llmops-evaluate-{name}", traces, redactor=pii.Redactor(enabled=False))
    with ready.judge.proxy or contextlib.nullcontext(), telemetry:
        try:
            sessions = open_sessions(root / use_case["eval_flow"], ready.judges, ready.judge, ready.model_config, k,
                                     params["bulk"]["row_timeout_s"], runtime_dir(root))  # fmt: skip
        except JudgeError as exc:
            raise SetupError(f"judge: {exc}") from None
        except engine.FlowError as exc:
            raise SetupError(engine.original_paths(str(exc), root / use_case["eval_flow"])) from None
        except Exception as exc:  # prompt flow could not load the flow (an init that raised, a bad entry)
            message = engine.original_paths(str(exc), root / use_case["eval_flow"])
            raise SetupError(f"{use_case['eval_flow']}: {type(exc).__name__}: {message}") from None
        return evaluate_variants(sessions, name, use_case, ready, prepared, run_by_variant, written)


def value_notes(specs: Sequence[headline.MetricSpec], rows: list[dict[str, Any]]) -> list[str]:
    """How values that are not plain numbers were read, per headline metric (stages/metrics/headline.py)."""
    return [note for spec in specs for note in headline.value_notes(spec, rows)]
