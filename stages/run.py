"""Stage `run`: bulk-run a use case's standard flow over its prepared rows with the selected variant and LLM."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stages.core import connections, datasets, flow_engine, llm_proxy
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.progress import Progress
from stages.core.project import load_params, project_root, runtime_dir


def summarize(results: list[flow_engine.RowResult], wall_s: float, usage: llm_proxy.Usage) -> dict[str, Any]:
    """Run metrics: row and error counts, answers the flow marked invalid, latency percentiles, LLM cache and tokens."""
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
        **usage.as_metrics(),
    }


def error_report(use_case: str, results: list[flow_engine.RowResult], max_error_rate: float) -> str | None:
    """Why the run fails (too many failed rows, or all of them), naming the first errors; None when it passes."""
    failed = [r for r in results if r.error is not None]
    rate = len(failed) / len(results) if results else 0.0
    if not failed or (rate <= max_error_rate and len(failed) < len(results)):
        return None
    first = "".join(f"\n  {r.row_id}: {r.error}" for r in failed[:3])
    return (
        f"run {use_case}: {len(failed)} of {len(results)} rows failed ({rate:.1%}, above bulk.max_error_rate "
        f"{max_error_rate:.1%}). Outputs and the LLM cache are written: a rerun makes only the requests that "
        f"failed. First errors:{first}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (from prepare)")
    parser.add_argument("--out", type=Path, required=True, help="per-row outputs (JSON Lines)")
    parser.add_argument("--summary", type=Path, required=True, help="run metrics (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder")
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
    proxy = llm_proxy.from_params(
        connection, params["llm"], params["llm_cache"], args.cache, row_of=flow_engine.row_of_request
    )
    with proxy:
        try:
            binding = flow_engine.binding_for(proxy.connection(connection), variant)
        except flow_engine.FlowError as exc:
            print(
                f"run: variant {use_case['variant']} of {args.use_case}: {exc}; "
                f"add use_cases.{args.use_case}.variants.{use_case['variant']}.prompt.{connection.api} in conf/",
                file=sys.stderr,
            )
            return 1
        try:
            session = flow_engine.FlowSession(
                root / use_case["flow"],
                binding,
                node_inputs=variant.get("node_inputs"),
                row_timeout_s=params["bulk"]["row_timeout_s"],
            )
        except flow_engine.FlowError as exc:
            print(f"run: variant {use_case['variant']} of {args.use_case}: {exc}", file=sys.stderr)
            return 1
        print(
            f"run {args.use_case}: {len(rows)} rows, variant {use_case['variant']}, "
            f"llm {connection.name} ({connection.model}), LLM cache {'on' if proxy.store else 'off'}",
            file=sys.stderr,
        )
        progress = Progress(f"run {args.use_case}", len(rows))
        started = time.perf_counter()
        results, records = [], []
        flow_rows = ((row["row_id"], {name: row[column] for name, column in inputs.items()}) for row in rows)
        for result in session.run_rows(flow_rows):
            usage = proxy.row_usage(result.row_id)
            results.append(result)
            records.append({"row_id": result.row_id, "outputs": result.outputs, "error": result.error,
                            "latency_s": round(result.latency_s, 4), "llm": usage.as_row()})  # fmt: skip
            progress.advance(error=result.error is not None, cache_hits=usage.hits)
        summary = summarize(results, time.perf_counter() - started, proxy.total)
    write_jsonl(args.out, records)
    write_json(args.summary, summary)
    cache = summary["cache"]
    print(
        f"run {args.use_case}: {summary['errors']} errors, {summary['invalid_answers']} invalid answers; "
        f"LLM cache {cache['hits']} hits, {cache['misses']} misses, {cache['errors']} errors"
    )
    if failure := error_report(args.use_case, results, params["bulk"]["max_error_rate"]):
        print(failure, file=sys.stderr)
        return 1
    pruned = llm_proxy.prune_after_success(proxy, params["llm_cache"])
    if pruned:
        print(f"run {args.use_case}: pruned {pruned} LLM cache files (unused, older than llm_cache.keep_days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
