"""Stage `run`: bulk-run a use case's standard flow over its prepared rows with the selected variant and LLM."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stages.core import connections, datasets, flow_engine
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (from prepare)")
    parser.add_argument("--out", type=Path, required=True, help="per-row outputs (JSON Lines)")
    parser.add_argument("--summary", type=Path, required=True, help="run metrics (JSON)")
    args = parser.parse_args(argv)

    root = project_root()
    params = load_params(root)
    use_case = params["use_cases"][args.use_case]
    variant = use_case["run"]
    flow_engine.configure(runtime_dir(root))
    try:
        connection = connections.resolve(params["llm"], connections.environment(root))
        connections.check_reachable(connection)
    except connections.ConnectionConfigError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1

    rows = read_jsonl(args.rows)
    inputs = datasets.input_columns(use_case["data"]["inputs"])
    try:
        binding = flow_engine.binding_for(connection, variant)
    except flow_engine.FlowError as exc:
        print(
            f"run: variant {use_case['variant']} of {args.use_case}: {exc}; "
            f"add use_cases.{args.use_case}.variants.{use_case['variant']}.prompt.{connection.api} in conf/",
            file=sys.stderr,
        )
        return 1
    try:
        session = flow_engine.FlowSession(root / use_case["flow"], binding, node_inputs=variant.get("node_inputs"))
    except flow_engine.FlowError as exc:
        print(f"run: variant {use_case['variant']} of {args.use_case}: {exc}", file=sys.stderr)
        return 1
    print(
        f"run {args.use_case}: {len(rows)} rows, variant {use_case['variant']}, "
        f"llm {connection.name} ({connection.model})",
        file=sys.stderr,
    )
    progress = Progress(f"run {args.use_case}", len(rows))
    started = time.perf_counter()
    results = []
    flow_rows = ((row["row_id"], {name: row[column] for name, column in inputs.items()}) for row in rows)
    for result in session.run_rows(flow_rows):
        results.append(result)
        progress.advance(error=result.error is not None)
    summary = summarize(results, time.perf_counter() - started)
    write_jsonl(
        args.out,
        (
            {"row_id": r.row_id, "outputs": r.outputs, "error": r.error, "latency_s": round(r.latency_s, 4)}
            for r in results
        ),
    )
    write_json(args.summary, summary)
    print(f"run {args.use_case}: {summary['errors']} errors, {summary['invalid_answers']} invalid answers")
    if results and summary["errors"] == len(results):
        print(f"run: every row failed; first error: {results[0].error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
