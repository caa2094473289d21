"""Stage `report`: a CSV of every row, an offline HTML page with charts, and `dvc plots` data for one use case."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.core.conf_schema import ConfError
from stages.core.io import read_json, read_jsonl, write_json, write_text
from stages.core.project import load_params, project_root
from stages.metrics import headline
from stages.observability import otlp_json, waterfall
from stages.results import charts, plan, reporting
from stages.results.rows import Columns, side_by_side


def power_curve(use_case: dict, eval_rows: Path, selected: str, baseline: str) -> charts.PowerCurve | None:
    """The first headline metric's power curve (`plan.power_curve`), the selected variant's evaluated rows paired
    with the baseline variant's; None without headline metrics or values."""
    specs = headline.parse_specs(use_case.get("metrics"), "use_cases.<uc>.metrics")
    if not specs:
        return None
    other = None if selected == baseline else read_jsonl(eval_rows / f"{baseline}.jsonl")
    return plan.power_curve(specs[0], read_jsonl(eval_rows / f"{selected}.jsonl"), other, baseline)


def evaluated_rows(folder: Path) -> Callable[[str], list[dict[str, Any]]]:
    """A variant's evaluated rows, read from `folder`/<variant>.jsonl."""
    return lambda name: read_jsonl(folder / f"{name}.jsonl")


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
    use_case = params["use_cases"][args.use_case]
    settings = params["report"]
    columns = Columns.from_config(use_case)
    metrics, run = read_json(args.metrics), read_json(args.run_summary)
    run_operations = read_json(args.run_operations)
    selected, baseline = metrics["variant"], metrics["baseline"]
    variants = reporting.variant_reports(metrics, run, run_operations, evaluated_rows(args.eval_rows), columns)
    rows = side_by_side(variants, columns.inputs)
    write_text(args.csv, reporting.to_csv(rows))
    write_json(args.plot_metrics, charts.headline_points(variants))
    write_json(args.plot_latency, charts.latency_points(variants))
    curve = power_curve(use_case, args.eval_rows, selected, baseline)
    shown = selected if selected == baseline else f"{selected} (baseline {baseline})"
    context = {"variant": shown, "llm": f"{params['llm']['name']} ({params['llm']['model']})"}
    appendix = ""
    if args.traces is not None:  # each row's trace, opened from the page (stages/observability/waterfall.py)
        appendix = waterfall.report_section(otlp_json.read(args.traces), selected, settings["max_rows_in_html"])
    page = reporting.render_html(f"{args.use_case}: evaluation report", context, variants, rows, settings["chart_dpi"],
                                 settings["max_rows_in_html"], columns.confusion, curve, appendix)  # fmt: skip
    write_text(args.html, page)
    print(f"report {args.use_case}: {args.html.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
