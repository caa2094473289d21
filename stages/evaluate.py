"""Stage `evaluate`: run a use case's evaluation flow over each variant's outputs and the ground truth, then
compute the headline metrics with confidence intervals and compare the selected variant with the baseline."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from stages import engine
from stages.core import variants
from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.project import load_params, project_root, runtime_dir
from stages.engine.maf import is_maf_flow
from stages.llm import connections, llm_proxy
from stages.metrics import cost, headline, operations, repeats
from stages.observability import pii, tracing
from stages.results import evaluation


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (ground truth)")
    parser.add_argument("--run", type=Path, required=True, help="the run's folder of per-row outputs per variant")
    parser.add_argument("--out", type=Path, required=True, help="folder of per-row evaluations, <variant>.jsonl")
    parser.add_argument("--metrics", type=Path, required=True, help="aggregated metrics (JSON)")
    parser.add_argument("--operations", type=Path, required=True, help="the judge calls' LLM cache counts (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder (judge calls)")
    parser.add_argument("--traces", type=Path, help="OTLP JSON trace file: one trace per evaluated row")
    return parser.parse_args(argv)


def _fail(label: str, message: str) -> int:
    print(f"{label}: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args, root = _arguments(argv), project_root()
    label = f"evaluate {args.use_case}"
    try:
        params = load_params(root)
    except ConfError as exc:
        return _fail(label, str(exc))
    use_case = params["use_cases"][args.use_case]
    engine.configure(runtime_dir(root))
    judges = use_case["evaluate"].get("judges") or {}
    args.cache.mkdir(parents=True, exist_ok=True)  # the stage's output, even without judges
    try:  # a flex evaluator taking `model_config` (a class's init, a function's parameter) gets the judge's LLM
        model_config = engine.declares_model_config(root / use_case["eval_flow"])
        eval_is_maf = is_maf_flow(root / use_case["eval_flow"])  # a MAF evaluation workflow gets the judge's LLM too
        model_config = model_config or eval_is_maf
    except Exception as exc:  # the entry's module failed to load: its own error, not a traceback
        return _fail(label, f"{use_case['eval_flow']}: {type(exc).__name__}: {exc}")
    try:
        plan = variants.plan_for(params, args.use_case)
        concurrency = connections.concurrency(params["judge"], "judge")  # the judge's, also for flows without one
        specs = headline.parse_specs(use_case.get("metrics"), f"use_cases.{args.use_case}.metrics")
        judge = evaluation.judging(params, use_case, root, args.cache, label, bool(judges or model_config),
                                   bridge_chat=eval_is_maf)  # fmt: skip
    except (variants.VariantError, headline.MetricSpecError, cost.PriceError) as exc:
        return _fail(label, str(exc))
    except connections.ConnectionConfigError as exc:
        return _fail(label, f"judge: {exc}")
    prepared = read_jsonl(args.rows)
    run_by_variant = {variant: read_jsonl(args.run / f"{variant}.jsonl") for variant in plan.names}
    k = max(repeats.in_records(rows) for rows in run_by_variant.values())
    rows_by_variant: dict[str, list[dict[str, Any]]] = {}
    metrics_by_variant: dict[str, dict[str, Any]] = {}
    failed: list[tuple[str, engine.RowResult]] = []
    telemetry = tracing.setup(f"llmops-evaluate-{args.use_case}", args.traces, redactor=pii.Redactor(enabled=False))
    with judge.proxy or contextlib.nullcontext(), telemetry:
        try:
            sessions = evaluation.open_sessions(root / use_case["eval_flow"], judges, judge, model_config, k,
                                                params["bulk"]["row_timeout_s"])  # fmt: skip
        except evaluation.JudgeError as exc:
            return _fail(label, f"judge: {exc}")
        except engine.FlowError as exc:
            return _fail(label, str(exc))
        except Exception as exc:  # prompt flow could not load the flow (an init that raised, a bad entry)
            return _fail(label, f"{use_case['eval_flow']}: {type(exc).__name__}: {exc}")
        for variant in plan.names:
            tracing.set_attributes(use_case=args.use_case, variant=variant, stage="evaluate")
            rows_by_variant[variant], metrics_by_variant[variant], bad = evaluation.evaluate_variant(
                sessions, args.use_case, variant, use_case, prepared, run_by_variant[variant], judge.proxy,
                judge.price, concurrency,
            )  # fmt: skip
            failed += [(variant, result) for result in bad]
            write_jsonl(args.out / f"{variant}.jsonl", rows_by_variant[variant])
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale.stem not in plan.names:
            stale.unlink()
    metrics, results = evaluation.combined_metrics(metrics_by_variant, rows_by_variant, specs, plan)
    for spec in specs:  # how values that are not plain numbers were read (stages/metrics/headline.py)
        for note in headline.value_notes(spec, rows_by_variant[plan.selected]):
            print(f"{label}: {note}", file=sys.stderr)
    for path, part in zip((args.metrics, args.operations), operations.split(metrics), strict=True):
        write_json(path, part)
    print("\n".join(evaluation.summary_lines(label, metrics_by_variant, results)))
    if failed:
        variant, first = failed[0]
        return _fail("evaluate", f"{len(failed)} rows failed in the evaluation flow; first ({variant}): {first.error}")
    if judge.proxy:
        llm_proxy.prune_after_success(judge.proxy, params["llm_cache"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
