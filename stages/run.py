"""Stage `run`: bulk-run a use case's standard flow over its prepared rows, for the selected variant and its
baseline, with the selected LLM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stages import engine
from stages.core import variants
from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_jsonl, write_text
from stages.core.project import load_params, project_root, runtime_dir
from stages.data import embeddings
from stages.engine.maf import is_maf_flow
from stages.llm import connections, llm_proxy
from stages.metrics import cost
from stages.observability import pii, tracing
from stages.results import bulk


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (from prepare)")
    parser.add_argument("--out", type=Path, required=True, help="folder of per-row outputs, <variant>.jsonl")
    parser.add_argument("--summary", type=Path, required=True, help="run metrics (JSON)")
    parser.add_argument("--operations", type=Path, required=True, help="LLM cache counts, wall time, rows/s (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder")
    parser.add_argument("--traces", type=Path, help="OTLP JSON trace file: one trace per row (stages/observability)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, root = _arguments(argv), project_root()
    try:
        params = load_params(root)
    except ConfError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    use_case = params["use_cases"][args.use_case]
    engine.configure(runtime_dir(root))
    if params.get("execution", {}).get("name", "local") == "azure":  # the rows run on Azure ML, not here
        if args.traces is not None:
            write_text(args.traces, "")  # no local rows, no local traces (the output exists all the same)
        return bulk.run_on_azure(root, args, params)
    try:
        run = bulk.local_run(params, root, args.use_case)
    except (variants.VariantError, connections.ConnectionConfigError, cost.PriceError, ValueError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    rows = read_jsonl(args.rows)
    summaries: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    proxy = llm_proxy.from_params(run.connection, params["llm"], params["llm_cache"], args.cache,
                                  row_of=engine.row_of_request, env=connections.environment(root),
                                  bridge_chat=is_maf_flow(root / use_case["flow"]))  # fmt: skip  # MAF speaks chat
    if run.connection.local_embeddings:  # a flow's own embedding requests (RAG), answered offline
        proxy.embeddings = embeddings.openai_answer
    # The dataset's rows are not production traffic: their traces keep the text (secrets are still redacted).
    telemetry = tracing.setup(f"llmops-run-{args.use_case}", args.traces, redactor=pii.Redactor(enabled=False))
    with proxy, telemetry:
        for variant in run.plan.names:
            tracing.set_attributes(use_case=args.use_case, variant=variant, stage="run")
            print(bulk.start_line(args.use_case, len(rows), variant, run, bool(proxy.store)), file=sys.stderr)
            try:
                results, records, summaries[variant] = bulk.run_variant(
                    root, args.use_case, use_case, variant, run.plan.selected, proxy, run.connection, rows,
                    params["bulk"]["row_timeout_s"], run.k, run.price, run.processes,
                )  # fmt: skip
            except (engine.FlowError, variants.VariantError) as exc:
                print(f"run: {exc}", file=sys.stderr)
                return 1
            write_jsonl(path := args.out / f"{variant}.jsonl", records)
            written.append(path)
            if failure := bulk.error_report(f"{args.use_case} {variant}", results, params["bulk"]["max_error_rate"]):
                print(failure, file=sys.stderr)  # outputs and cache are written; the rerun resumes from them
                return 1
    bulk.write_summary(args.out, (args.summary, args.operations), run.plan, summaries, written)
    bulk.report_summaries(args.use_case, summaries)
    if pruned := llm_proxy.prune_after_success(proxy, params["llm_cache"]):
        print(f"run {args.use_case}: pruned {pruned} LLM cache files (unused, older than llm_cache.keep_days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
