"""Bulk runs: a use case's standard flow over its prepared rows, for a variant, with the selected LLM through the
LLM proxy (locally) or as one bulk run on Azure ML; the output records and the run's summary. Used by the `run`
stage (stages/run.py)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stages import engine
from stages.core import variants
from stages.core.io import read_jsonl, write_json, write_jsonl
from stages.core.progress import Progress
from stages.core.project import runtime_dir
from stages.data import datasets, embeddings
from stages.engine.maf import azure as maf_azure
from stages.engine.maf import is_maf_flow
from stages.engine.promptflow import azure as azure_execution
from stages.llm import connections, llm_proxy
from stages.metrics import cost, operations, repeats, stats
from stages.observability import pii, tracing


def summarize(
    results: list[engine.RowResult], wall_s: float, usage: llm_proxy.Usage, price: cost.Price | None,
    k: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Run summary: row and error counts, answers the flow marked invalid, latency percentiles, tokens and cost,
    and the operational figures (wall time, rows/s, LLM cache; stages.metrics.operations). With k > 1 repeats
    (`results` row-major, k per row) errors count row repeats, and `outputs_identical` is the share of rows whose
    k outputs are all the same (no repeat failed)."""
    latencies = sorted(r.latency_s for r in results if r.error is None)
    invalid = sum(1 for r in results if r.outputs is not None and r.outputs.get("valid") is False)
    summary: dict[str, Any] = {"rows": len(results) // k}
    if k > 1:
        per_row = [results[i : i + k] for i in range(0, len(results), k)]
        identical = sum(1 for runs in per_row if all(r.error is None and r.outputs == runs[0].outputs for r in runs))
        summary |= {"repeats": k, "outputs_identical": round(identical / len(per_row), 4) if per_row else 0.0}
    metrics = usage.as_metrics()
    warned = sum(1 for r in results if r.warnings)
    if same := identical_outputs(results):
        summary["identical_outputs"] = same
    return summary | {
        "errors": sum(1 for r in results if r.error is not None),
        **({"rows_with_warnings": warned} if warned else {}),
        "invalid_answers": invalid,
        "latency_s": {
            "mean": round(statistics.fmean(latencies), 4) if latencies else 0.0,
            "p50": round(stats.percentile(latencies, 50) or 0.0, 4),
            "p95": round(stats.percentile(latencies, 95) or 0.0, 4),
        },
        "wall_s": round(wall_s, 2),
        "rows_per_s": round(len(results) / wall_s, 2) if wall_s > 0 else 0.0,
        **metrics,
        "cost": cost.cost_metrics(metrics["tokens"], price),
    }


PLACEHOLDER_SHARE, PLACEHOLDER_MIN_ROWS = 0.5, 3


def identical_outputs(results: list[engine.RowResult]) -> dict[str, Any] | None:
    """When more than half of the answered rows, and at least 3, have one identical output, that output and its count:
    most likely a placeholder a node returns when it swallowed an error ("No available content"), which would score
    as a plain wrong answer. None otherwise."""
    import collections
    import json

    answered = [json.dumps(r.outputs, sort_keys=True, ensure_ascii=False) for r in results if r.error is None]
    if not answered:
        return None
    output, count = collections.Counter(answered).most_common(1)[0]
    if count < PLACEHOLDER_MIN_ROWS or count / len(answered) <= PLACEHOLDER_SHARE:
        return None
    shown = output if len(output) <= 200 else output[:199] + "…"
    return {"rows": count, "of": len(answered), "output": shown}


def worker_processes(bulk: dict[str, Any]) -> int:
    """`bulk.processes` (default 1); the config schema checked it when the params were loaded (a whole number >= 1)."""
    return int(bulk.get("processes", 1))


def error_report(label: str, results: list[engine.RowResult], max_error_rate: float) -> str | None:
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


def open_session(
    root: Path, name: str, use_case: dict[str, Any], variant: str, selected: str,
    connection: connections.Connection, row_timeout_s: float,
) -> engine.FlowSession:  # fmt: skip
    """The use case's flow loaded for one variant: its LLM binding, node inputs and node variants. A FlowError
    names the variant, or the params key (and conf file) of a node variant the flow does not have."""
    block = variants.config(name, use_case, variant)
    node_variants = variants.node_variants(name, use_case, variant, selected)
    flow = root / use_case["flow"]
    try:
        binding = engine.binding_for(connection, block)
    except engine.FlowError as exc:
        raise engine.FlowError(
            f"variant {variant} of {name}: {exc}; add use_cases.{name}.variants.{variant}.prompt.{connection.api} "
            "in conf/"
        ) from exc
    try:
        # run from a copy (`copies`): what the flow writes beside its code (a download cache, an index) stays out of
        # the folder that is the run stage's DVC dependency
        return engine.FlowSession(
            flow, binding, node_inputs=block.get("node_inputs"),
            node_variants={node: variant_id for node, (variant_id, _) in node_variants.items()},
            row_timeout_s=row_timeout_s, copies=runtime_dir(root),
        )  # fmt: skip
    except engine.NodeVariantError as exc:
        key = node_variants[exc.node][1] if exc.node in node_variants else f"use_cases.{name}.variants.{variant}"
        raise engine.FlowError(f"{key} (conf/use_cases/{name}.yaml): {_named(exc, flow)}") from exc
    except engine.FlowError as exc:
        raise engine.FlowError(f"variant {variant} of {name}: {_named(exc, flow)}") from exc


def _named(error: Exception, flow: Path) -> str:
    """`error`'s message naming the project's flow folder `flow`, not the copy the session loaded (staging.py)."""
    return engine.original_paths(str(error), flow)


def run_variant(
    root: Path, name: str, use_case: dict[str, Any], variant: str, selected: str, proxy: llm_proxy.LLMProxy,
    connection: connections.Connection, rows: list[dict[str, Any]], row_timeout_s: float, k: int,
    price: cost.Price | None, processes: int = 1,
) -> tuple[list[engine.RowResult], list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Run one variant of the use case's flow over the rows, `k` times each, through the LLM proxy (repeat r
    through its `/r<r>` prefix), over `processes` worker processes: the results, the output records (with each
    row's LLM usage, a row's repeats together, in row order) and the summary (with the DAG's node variants)."""
    sessions = [
        open_session(root, name, use_case, variant, selected, proxy.connection(connection, repeat), row_timeout_s)
        for repeat in range(k)
    ]
    inputs = datasets.input_columns(use_case["data"]["inputs"])
    progress = Progress(f"run {name} {variant}", len(rows) * k)
    started, before = time.perf_counter(), proxy.totals()
    done: list[tuple[tuple[int, int], engine.RowResult, dict[str, Any]]] = []
    for repeat, session in enumerate(sessions):
        tagged = {repeats.tag(row["row_id"], repeat, k): (index, row) for index, row in enumerate(rows)}
        flow_rows = (
            (tag, {field: row[column] for field, column in inputs.items()}) for tag, (_, row) in tagged.items()
        )
        for result in session.run_rows(flow_rows, connection.concurrency, processes):
            index, row = tagged[result.row_id]
            usage = proxy.row_usage(result.row_id)
            done.append(((index, repeat), result, {
                "row_id": row["row_id"], **repeats.field(repeat, k), "outputs": result.outputs, "error": result.error,
                **({"warnings": list(result.warnings)} if result.warnings else {}),
                "latency_s": round(result.latency_s, 4), "llm": usage.as_row(),
            }))  # fmt: skip
            progress.advance(error=result.error is not None, cache_hits=usage.hits)
    done.sort(key=lambda item: item[0])
    results, records = [result for _, result, _ in done], [record for _, _, record in done]
    summary = summarize(results, time.perf_counter() - started, proxy.totals() - before, price, k)
    if sessions[0].node_variants:
        summary["node_variants"] = sessions[0].node_variants
    return results, records, summary


def write_summary(
    out: Path, paths: tuple[Path, Path], plan: variants.VariantPlan, summaries: dict[str, dict[str, Any]],
    written: list[Path],
) -> None:  # fmt: skip
    """The run's summary (the selected variant's, the others under `variants`), its metrics and its operations in
    `paths` (summary.json, operations.json); outputs of variants no longer run are removed, so they cannot look
    current."""
    for stale in out.glob("*.jsonl"):
        if stale not in written:
            stale.unlink()
    summary = {**summaries[plan.selected], "variant": plan.selected, "baseline": plan.baseline}
    if len(summaries) > 1:
        summary["variants"] = {name: s for name, s in summaries.items() if name != plan.selected}
    for path, part in zip(paths, operations.split(summary), strict=True):
        write_json(path, part)


def run_on_azure(root: Path, args: Any, params: dict[str, Any]) -> int:
    """`execution: azure`: each variant's rows run as one bulk run on Azure ML (stages/engine/promptflow/azure.py; a
    MAF workflow as a parallel job, stages/engine/maf/azure.py), with the outputs and summary of a local run. There
    is no local LLM, proxy or cache (the flow calls the LLM from Azure ML): cache counts, requests and tokens are 0,
    and row latencies 0.0 for prompt flow (the run's details have none)."""
    use_case = params["use_cases"][args.use_case]
    settings = params["execution"]
    maf = is_maf_flow(root / use_case["flow"])  # a MAF workflow runs as an Azure ML parallel job
    try:
        plan = variants.plan_for(params, args.use_case)
        if (k := repeats.count(params["bulk"])) != 1:
            raise repeats.RepeatsError(f"bulk.repeats: {k} needs execution: local (an Azure ML run is one pass)")
        price = cost.price_for(params["prices"], str(params["llm"].get("model", "")))
        env = connections.environment(root)
        client = (maf_azure.ml_client(azure_execution.workspace(settings, env)) if maf
                  else azure_execution.pf_client(settings, env))  # fmt: skip
    except (variants.VariantError, repeats.RepeatsError, cost.PriceError, azure_execution.AzureExecutionError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    rows = read_jsonl(args.rows)
    summaries: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    for variant in plan.names:
        print(f"run {args.use_case}: {len(rows)} rows, variant {variant}, on Azure ML", file=sys.stderr)
        started = time.perf_counter()
        located = {**use_case, "flow": str(root / use_case["flow"])}
        work = runtime_dir(root) / "azure" / args.use_case
        try:
            if maf:
                records = maf_azure.run_variant(
                    client, args.use_case, located, variant, params["llm"], settings, args.rows, rows, work,
                    datasets.input_columns(use_case["data"]["inputs"]), params["bulk"].get("row_timeout_s"),
                )  # fmt: skip
            else:
                records = azure_execution.run_variant(
                    client, args.use_case, located, variant, params["llm"], settings, args.rows, rows, work,
                    variants.node_variants(args.use_case, use_case, variant, plan.selected),
                )  # fmt: skip
        except (azure_execution.AzureExecutionError, maf_azure.MafAzureError, engine.FlowError,
                variants.VariantError) as exc:  # fmt: skip
            print(f"run: {exc}", file=sys.stderr)
            return 1
        results = [engine.RowResult(r["row_id"], r["outputs"], r["error"], r["latency_s"]) for r in records]
        wall_s = time.perf_counter() - started
        summaries[variant] = {**summarize(results, wall_s, llm_proxy.Usage(), price), "execution": "azure"}
        path = args.out / f"{variant}.jsonl"
        write_jsonl(path, records)
        written.append(path)
        if failure := error_report(f"{args.use_case} {variant}", results, params["bulk"]["max_error_rate"]):
            print(failure, file=sys.stderr)
            return 1
    write_summary(args.out, (args.summary, args.operations), plan, summaries, written)
    return 0


@dataclass(frozen=True)
class LocalRun:
    """What a local run of a use case needs besides its rows: the variant plan, the LLM, repeats, worker
    processes and the price."""

    plan: variants.VariantPlan
    connection: connections.Connection
    k: int
    processes: int
    price: cost.Price | None


def local_run(params: dict[str, Any], root: Path, name: str) -> LocalRun:
    """The plan, the reachable LLM, repeats, processes and price of a local run; warns of no price and of a
    variant the use case lacks. Raises VariantError, ConnectionConfigError, PriceError, ValueError."""
    plan = variants.plan_for(params, name)
    connection = connections.resolve(params["llm"], connections.environment(root))
    connections.check_reachable(connection)
    k = repeats.count(params["bulk"])
    processes = worker_processes(params["bulk"])
    price = cost.price_for(params["prices"], connection.model)
    if price is None:
        print(cost.unpriced_warning(f"run {name}", connection.model), file=sys.stderr)
    if plan.fell_back:
        print(f"run {name}: no variant {plan.requested}; running its baseline {plan.baseline}", file=sys.stderr)
    return LocalRun(plan, connection, k, processes, price)


def start_line(name: str, rows: int, variant: str, run: LocalRun, cached: bool) -> str:
    """What a local run of a variant says as it starts."""
    repeat = f" x {run.k} repeats" if run.k > 1 else ""
    over = f" over {run.processes} processes" if run.processes > 1 else ""
    return (f"run {name}: {rows} rows{repeat}, variant {variant}, llm {run.connection.name} ({run.connection.model}), "
            f"concurrency {run.connection.concurrency}{over}, LLM cache {'on' if cached else 'off'}")  # fmt: skip


def report_summaries(name: str, summaries: dict[str, dict[str, Any]]) -> None:
    """Per variant: errors, invalid answers, warnings and LLM cache counts; a warning for a placeholder answer."""
    for variant, s in summaries.items():
        cache = s["cache"]
        nodes = "".join(f", {node}={variant_id}" for node, variant_id in s.get("node_variants", {}).items())
        warned = f", {s['rows_with_warnings']} rows with warnings" if s.get("rows_with_warnings") else ""
        print(
            f"run {name} {variant}{nodes}: {s['errors']} errors, {s['invalid_answers']} invalid answers"
            f"{warned}; LLM cache {cache['hits']} hits, {cache['misses']} misses, {cache['errors']} errors"
        )
        if same := s.get("identical_outputs"):
            print(
                f"run {name} {variant}: warning: {same['rows']} of {same['of']} answered rows have the same "
                f"output {same['output']}: a placeholder answer of a node that swallowed an error? See the rows' "
                "warnings in the outputs",
                file=sys.stderr,
            )


class RunFailed(Exception):
    """A local run that stops; the message, printed as it is, says why (outputs written so far stay)."""


def run_locally(
    root: Path, params: dict[str, Any], name: str, rows_path: Path, cache: Path, traces: Path | None,
    write: Callable[[str, list[dict[str, Any]]], None],
) -> tuple[LocalRun, dict[str, dict[str, Any]], llm_proxy.LLMProxy]:  # fmt: skip
    """Every variant of the plan run over the rows in `rows_path` through the LLM proxy caching in `cache` (traces
    in `traces`), each variant's records handed to `write` before its error rate is checked (a rerun resumes from
    them): the run, the summaries by variant and the proxy. Raises RunFailed."""
    use_case = params["use_cases"][name]
    try:
        run = local_run(params, root, name)
    except (variants.VariantError, connections.ConnectionConfigError, cost.PriceError, ValueError) as exc:
        raise RunFailed(f"run: {exc}") from None
    rows = read_jsonl(rows_path)
    summaries: dict[str, dict[str, Any]] = {}
    proxy = llm_proxy.from_params(run.connection, params["llm"], params["llm_cache"], cache,
                                  row_of=engine.row_of_request, env=connections.environment(root),
                                  bridge_chat=is_maf_flow(root / use_case["flow"]))  # fmt: skip  # MAF speaks chat
    if run.connection.local_embeddings:  # a flow's own embedding requests (RAG), answered offline
        proxy.embeddings = embeddings.openai_answer
    # The dataset's rows are not production traffic: their traces keep the text (secrets are still redacted).
    telemetry = tracing.setup(f"llmops-run-{name}", traces, redactor=pii.Redactor(enabled=False))
    with proxy, telemetry:
        for variant in run.plan.names:
            tracing.set_attributes(use_case=name, variant=variant, stage="run")
            print(start_line(name, len(rows), variant, run, bool(proxy.store)), file=sys.stderr)
            # the variant's flow parses its LLM's answer as JSON: its requests ask for a JSON object
            json_answers = bool(use_case["variants"][variant].get("json_answers"))
            proxy.adapter = replace(proxy.adapter, json_answers=json_answers)
            try:
                results, records, summaries[variant] = run_variant(
                    root, name, use_case, variant, run.plan.selected, proxy, run.connection, rows,
                    params["bulk"]["row_timeout_s"], run.k, run.price, run.processes,
                )  # fmt: skip
            except (engine.FlowError, variants.VariantError) as exc:
                raise RunFailed(f"run: {exc}") from None
            write(variant, records)
            if failure := error_report(f"{name} {variant}", results, params["bulk"]["max_error_rate"]):
                raise RunFailed(failure)
    return run, summaries, proxy
