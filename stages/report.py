"""Stage `report`: a CSV of every row, an offline HTML page with charts, and `dvc plots` data for one use case."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core import datasets, reporting
from stages.core.io import read_json, read_jsonl, write_json, write_text
from stages.core.project import load_params, project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--eval-rows", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--run-summary", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--html", type=Path, required=True)
    parser.add_argument("--plot-metrics", type=Path, required=True, help="headline metrics, for `dvc plots`")
    parser.add_argument("--plot-latency", type=Path, required=True, help="latency per row, for `dvc plots`")
    args = parser.parse_args(argv)

    params = load_params(project_root())
    use_case = params["use_cases"][args.use_case]
    settings = params["report"]
    columns = reporting.Columns(
        inputs=tuple(datasets.input_columns(use_case["data"]["inputs"]).values()),
        label=use_case["data"]["label"],
        **{key: tuple(value) if isinstance(value, list) else value for key, value in use_case["report"].items()},
    )
    records = reporting.flatten_rows(read_jsonl(args.eval_rows), columns)
    write_text(args.csv, reporting.to_csv(records))
    context = {"variant": use_case["variant"], "llm": f"{params['llm']['name']} ({params['llm']['model']})"}
    metrics = read_json(args.metrics)
    write_json(args.plot_metrics, reporting.headline_points(metrics, columns.scores))
    write_json(args.plot_latency, reporting.latency_points(records))
    page = reporting.render_html(
        title=f"{args.use_case}: evaluation report",
        context=context,
        metrics=metrics,
        run=read_json(args.run_summary),
        records=records,
        dpi=settings["chart_dpi"],
        max_rows=settings["max_rows_in_html"],
        confusion=columns.confusion,
        scores=columns.scores,
    )
    write_text(args.html, page)
    print(f"report {args.use_case}: {args.html.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
