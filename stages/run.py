"""Stage `run`: bulk-run a use case's standard flow over its prepared rows, for the selected variant and its
baseline, with the selected LLM."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stages.core import connections, datasets, flow_engine, llm_proxy, variants
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


def error_report(label: str, results: list[flow_engine.RowResult], max_error_rate: float) -> str | None:
    """Why the run fails (too many failed rows, or all of them), naming the first errors; None when it passes."""
    failed = [r for r in results if r.error is not None]
    rate = len(failed) / len(results) if results else 0.0
    if not failed or (rate <= max_error_rate and len(failed) < len(results)):
        return None
    first = "".join(f"\n  {r.row_id}: {r.error}" for r in failed[:3])
    return (
        f"run {label}: {len(failed)} of {len(results)} rows failed ({rate:.1%}, above bulk.max_error_rate "
        f"{max_error_rate:.1%}). Outputs and the LLM cache are written: a rerun makes only the requests that "
        f"failed. First errors:{first}"
    )


def run_variant(
    root: Path, name: str, use_case: dict[str, Any], variant: str, proxy: llm_proxy.LLMProxy,
    connection: connections.Connection, rows: list[dict[str, Any]], row_timeout_s: float,
) -> tuple[list[flow_engine.RowResult], list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Run one variant of the use case's flow over the rows, through the LLM proxy: the results, the output
    records (with each row's LLM usage) and the run summary."""
    block = variants.config(name, use_case, variant)
    try:
        binding = flow_engine.binding_for(connection, block)
    except flow_engine.FlowError as exc:
        raise flow_engine.FlowError(
            f"variant {variant} of {name}: {exc}; add use_cases.{name}.variants.{variant}.prompt.{connection.api} "
            "in conf/"
        ) from exc
    try:
        session = flow_engine.FlowSession(
            root / use_case["flow"], binding, node_inputs=block.get("node_inputs"), row_timeout_s=row_timeout_s
        )
    except flow_engine.FlowError as exc:
        raise flow_engine.FlowError(f"variant {variant} of {name}: {exc}") from exc
    inputs = datasets.input_columns(use_case["data"]["inputs"])
    progress = Progress(f"run {name} {variant}", len(rows))
    started, before = time.perf_counter(), proxy.totals()
    completed, usage_by_row = [], {}
    flow_rows = ((row["row_id"], {field: row[column] for field, column in inputs.items()}) for row in rows)
    for result in session.run_rows(flow_rows, connection.concurrency):
        usage_by_row[result.row_id] = usage = proxy.row_usage(result.row_id)
        completed.append(result)
        progress.advance(error=result.error is not None, cache_hits=usage.hits)
    results = flow_engine.in_input_order(completed, [row["row_id"] for row in rows])  # deterministic outputs
    records = [{"row_id": r.row_id, "outputs": r.outputs, "error": r.error, "latency_s": round(r.latency_s, 4),
                "llm": usage_by_row[r.row_id].as_row()} for r in results]  # fmt: skip
    return results, records, summarize(results, time.perf_counter() - started, proxy.totals() - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (from prepare)")
    parser.add_argument("--out", type=Path, required=True, help="folder of per-row outputs, <variant>.jsonl")
    parser.add_argument("--summary", type=Path, required=True, help="run metrics (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder")
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
    proxy = llm_proxy.from_params(
        connection, params["llm"], params["llm_cache"], args.cache, row_of=flow_engine.row_of_request
    )
    with proxy:
        for variant in plan.names:
            print(
                f"run {args.use_case}: {len(rows)} rows, variant {variant}, llm {connection.name} "
                f"({connection.model}), concurrency {connection.concurrency}, "
                f"LLM cache {'on' if proxy.store else 'off'}",
                file=sys.stderr,
            )
            try:
                results, records, summaries[variant] = run_variant(
                    root, args.use_case, use_case, variant, proxy, proxy.connection(connection), rows,
                    params["bulk"]["row_timeout_s"],
                )  # fmt: skip
            except flow_engine.FlowError as exc:
                print(f"run: {exc}", file=sys.stderr)
                return 1
            path = args.out / f"{variant}.jsonl"
            write_jsonl(path, records)
            written.append(path)
            if failure := error_report(f"{args.use_case} {variant}", results, params["bulk"]["max_error_rate"]):
                print(failure, file=sys.stderr)  # outputs and cache are written; the rerun resumes from them
                return 1
    for stale in args.out.glob("*.jsonl"):  # variants no longer run must not look current
        if stale not in written:
            stale.unlink()
    summary = {**summaries[plan.selected], "variant": plan.selected, "baseline": plan.baseline}
    if len(summaries) > 1:
        summary["variants"] = {name: s for name, s in summaries.items() if name != plan.selected}
    write_json(args.summary, summary)
    for variant, s in summaries.items():
        cache = s["cache"]
        print(
            f"run {args.use_case} {variant}: {s['errors']} errors, {s['invalid_answers']} invalid answers; "
            f"LLM cache {cache['hits']} hits, {cache['misses']} misses, {cache['errors']} errors"
        )
    if pruned := llm_proxy.prune_after_success(proxy, params["llm_cache"]):
        print(f"run {args.use_case}: pruned {pruned} LLM cache files (unused, older than llm_cache.keep_days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
