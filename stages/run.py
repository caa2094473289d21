"""Stage `run`: bulk-run a use case's standard flow over its prepared rows, for the selected variant and its
baseline, with the selected LLM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stages import engine
from stages.core.conf_schema import ConfError
from stages.core.io import write_jsonl, write_text
from stages.core.project import load_params, project_root, runtime_dir
from stages.llm import llm_proxy
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
    engine.configure(runtime_dir(root))
    if params.get("execution", {}).get("name", "local") == "azure":  # the rows run on Azure ML, not here
        if args.traces is not None:
            write_text(args.traces, "")  # no local rows, no local traces (the output exists all the same)
        return bulk.run_on_azure(root, args, params)
    written: list[Path] = []

    def write(variant: str, records: list[dict[str, Any]]) -> None:
        write_jsonl(path := args.out / f"{variant}.jsonl", records)
        written.append(path)

    try:
        run, summaries, proxy = bulk.run_locally(root, params, args.use_case, args.rows, args.cache, args.traces, write)
    except bulk.RunFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    bulk.write_summary(args.out, (args.summary, args.operations), run.plan, summaries, written)
    bulk.report_summaries(args.use_case, summaries)
    if pruned := llm_proxy.prune_after_success(proxy, params["llm_cache"]):
        print(f"run {args.use_case}: pruned {pruned} LLM cache files (unused, older than llm_cache.keep_days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
