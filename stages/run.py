"""Stage `run`: bulk-run a use case's standard flow over its prepared rows, for the selected variant and its
baseline, with the selected LLM."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stages.core import connections, datasets, flow_engine, variants
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.progress import Progress
from stages.core.project import load_params, project_root, runtime_dir


def summarize(results: list[flow_engine.RowResult], wall_s: float) -> dict[str, Any]:
    """Run metrics: row and error counts, answers the flow marked invalid, latency percentiles."""
    latencies = sorted(r.latency_s for r in results if r.error is None)
    invalid = sum(1 for r in results if r.outputs is not None and r.outputs.get("valid") is False)
    return {
        "rows": len(results),
        "errors": sum(1 for r in results if r.error is not None),
        "invalid_answers": invalid,
        "latency_s": {
            "mean": round(statistics.fmean(latencies), 4) if latencies else 0.0,
            "p50": round(latencies[len(latencies) // 2], 4) if latencies else 0.0,
            "p95": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))], 4) if latencies else 0.0,
        },
        "wall_s": round(wall_s, 2),
    }


def run_variant(
    root: Path, name: str, use_case: dict[str, Any], variant: str, connection: connections.Connection,
    rows: list[dict[str, Any]],
) -> tuple[list[flow_engine.RowResult], dict[str, Any]]:  # fmt: skip
    """Run one variant of the use case's flow over the rows; the results and the run summary."""
    block = variants.config(name, use_case, variant)
    try:
        binding = flow_engine.binding_for(connection, block)
    except flow_engine.FlowError as exc:
        raise flow_engine.FlowError(
            f"variant {variant} of {name}: {exc}; add use_cases.{name}.variants.{variant}.prompt.{connection.api} "
            "in conf/"
        ) from exc
    try:
        session = flow_engine.FlowSession(root / use_case["flow"], binding, node_inputs=block.get("node_inputs"))
    except flow_engine.FlowError as exc:
        raise flow_engine.FlowError(f"variant {variant} of {name}: {exc}") from exc
    inputs = datasets.input_columns(use_case["data"]["inputs"])
    progress = Progress(f"run {name} {variant}", len(rows))
    started = time.perf_counter()
    results = []
    flow_rows = ((row["row_id"], {field: row[column] for field, column in inputs.items()}) for row in rows)
    for result in session.run_rows(flow_rows):
        results.append(result)
        progress.advance(error=result.error is not None)
    return results, summarize(results, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (from prepare)")
    parser.add_argument("--out", type=Path, required=True, help="folder of per-row outputs, <variant>.jsonl")
    parser.add_argument("--summary", type=Path, required=True, help="run metrics (JSON)")
    args = parser.parse_args(argv)

    root = project_root()
    params = load_params(root)
    use_case = params["use_cases"][args.use_case]
    flow_engine.configure(runtime_dir(root))
    try:
        plan = variants.plan(args.use_case, use_case)
        connection = connections.resolve(params["llm"], connections.environment(root))
        connections.check_reachable(connection)
    except (variants.VariantError, connections.ConnectionConfigError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    if plan.fell_back:
        print(
            f"run {args.use_case}: no variant {plan.requested}; running its baseline {plan.baseline}", file=sys.stderr
        )

    rows = read_jsonl(args.rows)
    summaries: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    for variant in plan.names:
        print(
            f"run {args.use_case}: {len(rows)} rows, variant {variant}, llm {connection.name} ({connection.model})",
            file=sys.stderr,
        )
        try:
            results, summaries[variant] = run_variant(root, args.use_case, use_case, variant, connection, rows)
        except flow_engine.FlowError as exc:
            print(f"run: {exc}", file=sys.stderr)
            return 1
        path = args.out / f"{variant}.jsonl"
        write_jsonl(
            path,
            (
                {"row_id": r.row_id, "outputs": r.outputs, "error": r.error, "latency_s": round(r.latency_s, 4)}
                for r in results
            ),
        )
        written.append(path)
        if results and summaries[variant]["errors"] == len(results):
            print(f"run: every row of variant {variant} failed; first error: {results[0].error}", file=sys.stderr)
            return 1
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale not in written:
            stale.unlink()
    summary = {**summaries[plan.selected], "variant": plan.selected, "baseline": plan.baseline}
    if len(summaries) > 1:
        summary["variants"] = {name: s for name, s in summaries.items() if name != plan.selected}
    write_json(args.summary, summary)
    for variant, s in summaries.items():
        print(f"run {args.use_case} {variant}: {s['errors']} errors, {s['invalid_answers']} invalid answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
