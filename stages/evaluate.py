"""Stage `evaluate`: run a use case's evaluation flow over each variant's outputs and the ground truth, then
compute the headline metrics with confidence intervals and compare the selected variant with the baseline."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stages import engine
from stages.core import connections, llm_proxy, repeats, variants
from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.progress import Progress
from stages.core.project import load_params, project_root, runtime_dir
from stages.engine.maf import is_maf_flow
from stages.metrics import cost, headline, judge, operations


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
    tokens and cost, through `proxy`), and the rows the eval flow failed. Repeat r of a row is evaluated by
    `sessions[r]` (its judges ask through the proxy's `/r<r>` prefix); the flow's own metrics pool every repeat.
    `concurrency` rows are evaluated at once."""
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
    for repeat, session in enumerate(sessions):
        flow_rows = [(repeats.tag(row["row_id"], repeat, k), inputs)
                     for (row, r), inputs in zip(evaluable, eval_inputs, strict=True) if r == repeat]  # fmt: skip
        for result in session.run_rows(flow_rows, concurrency):
            completed[result.row_id] = result
            hits = proxy.row_usage(result.row_id).hits if proxy else 0
            progress.advance(error=result.error is not None, cache_hits=hits)
    results = [completed[repeats.tag(row["row_id"], repeat, k)] for row, repeat in evaluable]  # input order
    eval_by_key = {(row["row_id"], repeat): result for (row, repeat), result in zip(evaluable, results, strict=True)}
    try:
        metrics = sessions[0].aggregate(results, eval_inputs) if evaluable else {}
    except engine.AggregationError as exc:  # the flow's own code: recorded and said, the rows still count
        metrics = {"aggregation_error": str(exc)}
        print(f"evaluate {name} {variant}: warning: {exc}; the metrics it logs are missing, the headline metrics are "
              "computed from the evaluated rows", file=sys.stderr)  # fmt: skip
    failed = [r for r in results if r.error]
    metrics.update({"rows": len(results) - len(failed), "run_errors": len(prepared) * k - len(evaluable),
                    "eval_errors": len(failed)})  # fmt: skip
    if k > 1:
        metrics["repeats"] = k
    joined = list(joined_rows(prepared, run_by_key, eval_by_key, k))
    nested = nest(metrics)
    if proxy and before:  # the judge calls
        usage = (proxy.totals() - before).as_metrics()
        nested.update(usage, cost=cost.cost_metrics(usage["tokens"], price))
    return joined, nested, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (ground truth)")
    parser.add_argument("--run", type=Path, required=True, help="the run's folder of per-row outputs per variant")
    parser.add_argument("--out", type=Path, required=True, help="folder of per-row evaluations, <variant>.jsonl")
    parser.add_argument("--metrics", type=Path, required=True, help="aggregated metrics (JSON)")
    parser.add_argument("--operations", type=Path, required=True, help="the judge calls' LLM cache counts (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder (judge calls)")
    args = parser.parse_args(argv)

    root = project_root()
    try:
        params = load_params(root)
    except ConfError as exc:
        print(f"evaluate {args.use_case}: {exc}", file=sys.stderr)
        return 1
    use_case = params["use_cases"][args.use_case]
    engine.configure(runtime_dir(root))
    judges = use_case["evaluate"].get("judges") or {}
    args.cache.mkdir(parents=True, exist_ok=True)  # the stage's output, even without judges
    proxy, price = None, None
    try:
        # A flex evaluator taking `model_config` (a class's init, a function's parameter) gets the judge's LLM.
        model_config = engine.declares_model_config(root / use_case["eval_flow"])
        eval_is_maf = is_maf_flow(root / use_case["eval_flow"])  # a MAF evaluation workflow may call an LLM
    except Exception as exc:  # the entry's module failed to load: its own error, not a traceback
        print(f"evaluate {args.use_case}: {use_case['eval_flow']}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        plan = variants.plan_for(params, args.use_case)
        concurrency = connections.concurrency(params["judge"], "judge")  # the judge's, also for flows without one
        specs = headline.parse_specs(use_case.get("metrics"), f"use_cases.{args.use_case}.metrics")
        if judges or model_config or eval_is_maf:
            connection = connections.resolve(params["judge"], connections.environment(root))
            connections.check_reachable(connection)
            proxy = llm_proxy.from_params(
                connection,
                params["judge"],
                params["llm_cache"],
                args.cache,
                row_of=engine.row_of_request,
                bridge_chat=eval_is_maf,
            )
            price = cost.price_for(params["prices"], connection.model)
            if price is None:
                print(cost.unpriced_warning(f"evaluate {args.use_case}: judge", connection.model), file=sys.stderr)
    except (variants.VariantError, headline.MetricSpecError, cost.PriceError) as exc:
        print(f"evaluate {args.use_case}: {exc}", file=sys.stderr)
        return 1
    except connections.ConnectionConfigError as exc:
        print(f"evaluate {args.use_case}: judge: {exc}", file=sys.stderr)
        return 1
    prepared = read_jsonl(args.rows)

    rows_by_variant: dict[str, list[dict[str, Any]]] = {}
    metrics_by_variant: dict[str, dict[str, Any]] = {}
    failed_by_variant: dict[str, list[engine.RowResult]] = {}
    run_by_variant = {variant: read_jsonl(args.run / f"{variant}.jsonl") for variant in plan.names}
    k = max(repeats.in_records(rows) for rows in run_by_variant.values())
    with proxy or contextlib.nullcontext():
        sessions = []
        for repeat in range(k if proxy else 1):  # a flow without judges asks no LLM: one session serves every repeat
            try:
                judged = proxy.connection(connection, repeat) if proxy else None
                bindings = judge_bindings(judges, judged) if judged and judges else []
                if judged and (model_config or eval_is_maf):
                    bindings = [engine.LLMBinding(judged)]
            except engine.FlowError as exc:
                print(f"evaluate {args.use_case}: judge: {exc}", file=sys.stderr)
                return 1
            try:
                sessions.append(engine.FlowSession(
                    root / use_case["eval_flow"], *bindings, row_timeout_s=params["bulk"]["row_timeout_s"]
                ))  # fmt: skip
            except engine.FlowError as exc:
                print(f"evaluate {args.use_case}: {exc}", file=sys.stderr)
                return 1
            except Exception as exc:  # prompt flow could not load the flow (an init that raised, a bad entry)
                print(f"evaluate {args.use_case}: {use_case['eval_flow']}: {type(exc).__name__}: {exc}",
                      file=sys.stderr)  # fmt: skip
                return 1
        sessions *= k // len(sessions)
        for variant in plan.names:
            rows_by_variant[variant], metrics_by_variant[variant], failed_by_variant[variant] = evaluate_variant(
                sessions,
                args.use_case,
                variant,
                use_case,
                prepared,
                run_by_variant[variant],
                proxy,
                price,
                concurrency,
            )
            write_jsonl(args.out / f"{variant}.jsonl", rows_by_variant[variant])
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale.stem not in plan.names:
            stale.unlink()

    results = headline.headline(specs, rows_by_variant, plan.baseline)
    for spec in specs:  # how values that are not plain numbers were read (stages/metrics/headline.py)
        for note in headline.value_notes(spec, rows_by_variant[plan.selected]):
            print(f"evaluate {args.use_case}: {note}", file=sys.stderr)
    for variant, by_metric in results.items():
        metrics_by_variant[variant]["headline"] = {metric: r.as_dict() for metric, r in by_metric.items()}
    metrics = {**metrics_by_variant[plan.selected], "variant": plan.selected, "baseline": plan.baseline}
    if len(plan.names) > 1:
        metrics["variants"] = {name: m for name, m in metrics_by_variant.items() if name != plan.selected}
    for path, part in zip((args.metrics, args.operations), operations.split(metrics), strict=True):
        write_json(path, part)

    for variant, variant_metrics in metrics_by_variant.items():
        # Top-level numbers and each judge's mean and error count; per-class values only in the metrics file.
        flat = {k: v for k, v in variant_metrics.items() if not isinstance(v, dict)}
        flat |= {f"{k}.{part}": v[part] for k, v in variant_metrics.items()
                 if isinstance(v, dict) and "errors" in v for part in ("errors", "mean") if part in v}  # fmt: skip
        summary = ", ".join(f"{k}={v}" for k, v in flat.items())
        print(f"evaluate {args.use_case} {variant}: {summary}")
        for metric, result in results.get(variant, {}).items():
            print(f"  {metric}: {headline.describe(result)}")
    failed = [(variant, r) for variant, rows in failed_by_variant.items() for r in rows]
    if failed:
        variant, first = failed[0]
        print(
            f"evaluate: {len(failed)} rows failed in the evaluation flow; first ({variant}): {first.error}",
            file=sys.stderr,
        )
        return 1
    if proxy:
        llm_proxy.prune_after_success(proxy, params["llm_cache"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
