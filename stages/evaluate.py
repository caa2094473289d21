"""Stage `evaluate`: run a use case's evaluation flow over each variant's outputs and the ground truth, then
compute the headline metrics with confidence intervals and compare the selected variant with the baseline."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from stages import engine
from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.project import load_params, project_root, runtime_dir
from stages.llm import llm_proxy
from stages.metrics import headline, operations, repeats
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
        engine.configure(runtime_dir(root))
        ready = evaluation.setup(params, args.use_case, root, args.cache, label)
    except (ConfError, evaluation.SetupError) as exc:
        return _fail(label, str(exc))
    use_case, plan = params["use_cases"][args.use_case], ready.plan
    prepared = read_jsonl(args.rows)
    run_by_variant = {variant: read_jsonl(args.run / f"{variant}.jsonl") for variant in plan.names}
    k = max(repeats.in_records(rows) for rows in run_by_variant.values())
    telemetry = tracing.setup(f"llmops-evaluate-{args.use_case}", args.traces, redactor=pii.Redactor(enabled=False))
    with ready.judge.proxy or contextlib.nullcontext(), telemetry:
        try:
            sessions = evaluation.open_sessions(root / use_case["eval_flow"], ready.judges, ready.judge,
                                                ready.model_config, k, params["bulk"]["row_timeout_s"])  # fmt: skip
        except evaluation.JudgeError as exc:
            return _fail(label, f"judge: {exc}")
        except engine.FlowError as exc:
            return _fail(label, str(exc))
        except Exception as exc:  # prompt flow could not load the flow (an init that raised, a bad entry)
            return _fail(label, f"{use_case['eval_flow']}: {type(exc).__name__}: {exc}")
        rows_by_variant, metrics_by_variant, failed = evaluation.evaluate_variants(
            sessions, args.use_case, use_case, ready, prepared, run_by_variant,
            lambda variant, rows: write_jsonl(args.out / f"{variant}.jsonl", rows),
        )  # fmt: skip
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale.stem not in plan.names:
            stale.unlink()
    metrics, results = evaluation.combined_metrics(metrics_by_variant, rows_by_variant, ready.specs, plan)
    for spec in ready.specs:  # how values that are not plain numbers were read (stages/metrics/headline.py)
        for note in headline.value_notes(spec, rows_by_variant[plan.selected]):
            print(f"{label}: {note}", file=sys.stderr)
    for path, part in zip((args.metrics, args.operations), operations.split(metrics), strict=True):
        write_json(path, part)
    print("\n".join(evaluation.summary_lines(label, metrics_by_variant, results)))
    if failed:
        variant, first = failed[0]
        return _fail("evaluate", f"{len(failed)} rows failed in the evaluation flow; first ({variant}): {first.error}")
    if ready.judge.proxy:
        llm_proxy.prune_after_success(ready.judge.proxy, params["llm_cache"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
