"""Stage `evaluate`: run a use case's evaluation flow over each variant's outputs and the ground truth, then
compute the headline metrics with confidence intervals and compare the selected variant with the baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages import engine
from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.project import load_params, project_root, runtime_dir
from stages.llm import llm_proxy
from stages.metrics import operations
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


def main(argv: list[str] | None = None) -> int:
    args, root = _arguments(argv), project_root()
    label = f"evaluate {args.use_case}"
    try:
        params = load_params(root)
        engine.configure(runtime_dir(root))
        ready = evaluation.setup(params, args.use_case, root, args.cache, label)
        plan, prepared = ready.plan, read_jsonl(args.rows)
        run_by_variant = {variant: read_jsonl(args.run / f"{variant}.jsonl") for variant in plan.names}
        rows_by_variant, metrics_by_variant, failed = evaluation.evaluate_all(
            root, params, args.use_case, ready, prepared, run_by_variant, args.traces,
            lambda variant, rows: write_jsonl(args.out / f"{variant}.jsonl", rows),
        )  # fmt: skip
    except (ConfError, evaluation.SetupError) as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return 1
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale.stem not in plan.names:
            stale.unlink()
    metrics, results = evaluation.combined_metrics(metrics_by_variant, rows_by_variant, ready.specs, plan)
    for note in evaluation.value_notes(ready.specs, rows_by_variant[plan.selected]):
        print(f"{label}: {note}", file=sys.stderr)
    for path, part in zip((args.metrics, args.operations), operations.split(metrics), strict=True):
        write_json(path, part)
    print("\n".join(evaluation.summary_lines(label, metrics_by_variant, results)))
    if failed:
        variant, first = failed[0]
        print(f"evaluate: {len(failed)} rows failed in the evaluation flow; first ({variant}): {first.error}",
              file=sys.stderr)  # fmt: skip
        return 1
    if ready.judge.proxy:
        llm_proxy.prune_after_success(ready.judge.proxy, params["llm_cache"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
