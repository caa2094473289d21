"""Stage `evaluate`: run a use case's evaluation flow over the run's outputs and the ground truth."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core import connections, flow_engine, llm_proxy
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.progress import Progress
from stages.core.project import load_params, project_root, runtime_dir


def map_inputs(mapping: dict[str, str], row: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Build the evaluation flow's inputs: `data.<column>` reads the prepared row, `outputs.<name>` the run."""
    inputs = {}
    for name, source in mapping.items():
        scope, _, key = source.partition(".")
        if scope not in ("data", "outputs") or not key:
            raise ValueError(f"evaluate.mapping.{name}: expected 'data.<column>' or 'outputs.<name>', got {source!r}")
        inputs[name] = (row if scope == "data" else outputs)[key]
    return inputs


def joined_rows(
    prepared: list[dict[str, Any]], run_by_id: dict[str, dict[str, Any]], eval_by_id: dict[str, flow_engine.RowResult]
) -> Iterator[dict[str, Any]]:
    """Every prepared row with its run outputs and its evaluation (None where the row never got that far)."""
    for row in prepared:
        run = run_by_id[row["row_id"]]
        evaluation = eval_by_id.get(row["row_id"])
        yield {
            **row,
            "outputs": run["outputs"],
            "run_error": run["error"],
            "latency_s": run["latency_s"],
            "eval": evaluation.outputs if evaluation else None,
            "eval_error": evaluation.error if evaluation else None,
        }


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'precision.App': 1} -> {'precision': {'App': 1}}, so `dvc metrics` groups per-class values."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def judge_bindings(judges: dict[str, Any], connection: connections.Connection) -> list[flow_engine.LLMBinding]:
    """Bind each judge node of the evaluation flow (`evaluate.judges.<node>`) to the judge connection."""
    return [flow_engine.binding_for(connection, block, node=node) for node, block in judges.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--rows", type=Path, required=True, help="prepared rows (ground truth)")
    parser.add_argument("--run", type=Path, required=True, help="the run's per-row outputs")
    parser.add_argument("--out", type=Path, required=True, help="per-row evaluation (JSON Lines)")
    parser.add_argument("--metrics", type=Path, required=True, help="aggregated metrics (JSON)")
    parser.add_argument("--cache", type=Path, required=True, help="the row-level LLM cache folder (judge calls)")
    args = parser.parse_args(argv)

    root = project_root()
    params = load_params(root)
    use_case = params["use_cases"][args.use_case]
    flow_engine.configure(runtime_dir(root))
    judges = use_case["evaluate"].get("judges") or {}
    args.cache.mkdir(parents=True, exist_ok=True)  # the stage's output, even without judges
    proxy = None
    if judges:
        try:
            connection = connections.resolve(params["judge"], connections.environment(root))
            connections.check_reachable(connection)
        except connections.ConnectionConfigError as exc:
            print(f"evaluate {args.use_case}: judge: {exc}", file=sys.stderr)
            return 1
        proxy = llm_proxy.from_params(
            connection, params["judge"], params["llm_cache"], args.cache, row_of=flow_engine.row_of_request
        )
    run_by_id = {row["row_id"]: row for row in read_jsonl(args.run)}
    prepared = read_jsonl(args.rows)
    evaluable = [row for row in prepared if run_by_id[row["row_id"]]["error"] is None]
    eval_inputs = [
        map_inputs(use_case["evaluate"]["mapping"], row, run_by_id[row["row_id"]]["outputs"]) for row in evaluable
    ]

    with proxy or contextlib.nullcontext():
        try:
            bindings = judge_bindings(judges, proxy.connection(connection)) if proxy else []
        except flow_engine.FlowError as exc:
            print(f"evaluate {args.use_case}: judge: {exc}", file=sys.stderr)
            return 1
        session = flow_engine.FlowSession(
            root / use_case["eval_flow"], *bindings, row_timeout_s=params["bulk"]["row_timeout_s"]
        )
        progress = Progress(f"evaluate {args.use_case}", len(evaluable))
        results = []
        rows = ((row["row_id"], inputs) for row, inputs in zip(evaluable, eval_inputs, strict=True))
        for result in session.run_rows(rows):
            results.append(result)
            hits = proxy.row_usage(result.row_id).hits if proxy else 0
            progress.advance(error=result.error is not None, cache_hits=hits)
        metrics = session.aggregate(results, eval_inputs) if evaluable else {}
    failed = [r for r in results if r.error]
    metrics.update(
        {"rows": len(results) - len(failed), "run_errors": len(prepared) - len(evaluable), "eval_errors": len(failed)}
    )
    nested = nest(metrics)
    if proxy:  # the judge calls: LLM cache counts and tokens
        nested.update(proxy.total.as_metrics())

    write_jsonl(args.out, joined_rows(prepared, run_by_id, {r.row_id: r for r in results}))
    write_json(args.metrics, nested)
    summary = ", ".join(f"{k}={v}" for k, v in metrics.items() if "." not in k)
    print(f"evaluate {args.use_case}: {summary}")
    if failed:
        print(f"evaluate: {len(failed)} rows failed in the evaluation flow; first: {failed[0].error}", file=sys.stderr)
        return 1
    if proxy:
        llm_proxy.prune_after_success(proxy, params["llm_cache"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
