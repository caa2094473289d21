"""Stage `report`: a CSV of every row, an offline HTML page with charts, and `dvc plots` data for one use case."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.conf_schema import ConfError
from stages.core.io import read_json, read_jsonl, write_json, write_text
from stages.core.project import load_params, project_root
from stages.observability import otlp_json
from stages.results import reporting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--eval-rows", type=Path, required=True, help="folder of per-row evaluations, <variant>.jsonl")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--run-summary", type=Path, required=True)
    parser.add_argument("--run-operations", type=Path, required=True, help="the run's LLM cache counts, wall time")
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--html", type=Path, required=True)
    parser.add_argument("--plot-metrics", type=Path, required=True, help="headline metrics, for `dvc plots`")
    parser.add_argument("--plot-latency", type=Path, required=True, help="latency per row, for `dvc plots`")
    parser.add_argument("--traces", type=Path, help="the run's OTLP JSON trace file: each row's waterfall")
    args = parser.parse_args(argv)

    try:
        params = load_params(project_root())
    except ConfError as exc:  # e.g. an unknown `use_cases.<uc>.report` key
        print(f"report {args.use_case}: {exc}", file=sys.stderr)
        return 1
    report = reporting.build(
        args.use_case, params, read_json(args.metrics), read_json(args.run_summary), read_json(args.run_operations),
        lambda name: read_jsonl(args.eval_rows / f"{name}.jsonl"),
        None if args.traces is None else otlp_json.read(args.traces),
    )  # fmt: skip
    write_text(args.csv, report.csv)
    write_json(args.plot_metrics, report.plot_metrics)
    write_json(args.plot_latency, report.plot_latency)
    write_text(args.html, report.html)
    print(f"report {args.use_case}: {args.html.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
