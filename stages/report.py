"""Stage `report`: a CSV of every row, an offline HTML page with charts, and `dvc plots` data for one use case."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.conf_schema import ConfError
from stages.core.io import read_json, read_jsonl, write_json, write_text
from stages.core.project import load_params, project_root
from stages.metrics import headline, operations, power
from stages.observability import otlp_json, waterfall
from stages.results import charts, plan, reporting
from stages.results.rows import Columns, VariantReport, flatten_rows, side_by_side


def power_curve(use_case: dict, eval_rows: Path, selected: str, baseline: str) -> charts.PowerCurve | None:
    """The first headline metric's power curve: the selected variant paired with the baseline variant (the
    optimistic, concentrated-drop noise when they are the same); None without headline metrics or values."""
    specs = headline.parse_specs(use_case.get("metrics"), "use_cases.<uc>.metrics")
    if not specs:
        return None
    other = None if selected == baseline else read_jsonl(eval_rows / f"{baseline}.jsonl")
    found = plan.summary(specs[0], read_jsonl(eval_rows / f"{selected}.jsonl"), other)
    if found is None:
        return None
    noise, paired = found
    drops = [noise.scale * i / 50 for i in range(51)]
    flipped = f"{noise.spread:.0%} of rows flipped" if noise.kind == power.PASS_FAIL else f"sd {noise.spread:.2f}"
    note = f"{flipped} against {baseline}" if paired else "one variant: a drop concentrated on the rows it breaks"
    return charts.PowerCurve(specs[0].name, noise.rows, drops, power.power_curve(noise, drops),
                                power.mde(noise), noise.scale == 1.0, note)  # fmt: skip


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
    names = [baseline] if selected == baseline else [baseline, selected]

    def part(name: str) -> VariantReport:
        own_metrics = metrics if name == selected else metrics["variants"][name]
        own_run = run if name == selected else run["variants"][name]
        records = flatten_rows(read_jsonl(args.eval_rows / f"{name}.jsonl"), columns)
        return VariantReport(name, records, own_metrics, own_run, operations.of_variant(run_operations, name))

    variants = [part(name) for name in names]
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
    page = reporting.render_html(
        title=f"{args.use_case}: evaluation report",
        context=context,
        variants=variants,
        rows=rows,
        dpi=settings["chart_dpi"],
        max_rows=settings["max_rows_in_html"],
        confusion=columns.confusion,
        power=curve,
        appendix=appendix,
    )
    write_text(args.html, page)
    print(f"report {args.use_case}: {args.html.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
