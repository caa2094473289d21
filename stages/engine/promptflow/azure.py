"""Bulk runs on Azure ML (`execution: azure`), for datasets that outgrow one machine.

The run is submitted through prompt flow's Azure support (`promptflow.azure.PFClient`, package promptflow-azure):
the variant is baked into a copy of the flow (stages/engine/bake.py), the prepared rows are the run's data,
and the run's per-line outputs come back as the run stage's records (row_id, outputs, error, latency_s). The run
name is derived from the flow's and the data's hashes, so a resubmission of the same work finds the finished run
instead of paying for it again. Prompt flow's Azure API is used only here, inside functions (it is retired in
April 2027, like the rest of prompt flow).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.yaml_reader import load_yaml
from stages.data import datasets
from stages.engine import bake
from stages.engine.binding import NodeVariantError, model_input

_WORKSPACE_KEYS = (
    ("subscription_id", "subscription_id_env"),
    ("resource_group_name", "resource_group_env"),
    ("workspace_name", "workspace_env"),
)


class AzureExecutionError(RuntimeError):
    """A run on Azure ML that cannot be submitted or did not complete; the message names the key or the run."""


def run_name(use_case: str, variant: str, flow_sha256: str, data: Path) -> str:
    """A deterministic run name: the same flow, variant and data give the same name."""
    data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    return f"{use_case}-{variant}-{flow_sha256[:10]}-{data_sha[:10]}"


def azure_run(
    name: str, use_case: str, variant: str, flow: Path, data: Path, inputs: Mapping[str, str],
    settings: Mapping[str, Any], llm: Mapping[str, Any],
) -> Any:  # fmt: skip
    """The prompt flow Run entity: the baked flow over the data, flow input <- `${data.<column>}`, a DAG's LLM nodes
    on the workspace connection `settings.connection`, on serverless compute (`settings.compute`) or a named
    runtime."""
    from promptflow.entities import Run

    extra: dict[str, Any] = {}
    if settings.get("runtime"):
        extra["runtime"] = str(settings["runtime"])
    else:
        extra["resources"] = dict(settings.get("compute") or {"instance_type": "Standard_D2as_v5"})
    dag = flow / "flow.dag.yaml"
    nodes = (load_yaml(dag.read_text(encoding="utf-8")) or {}).get("nodes", []) if dag.is_file() else []
    model_field = model_input(str(llm.get("type", "")))
    connections = {
        node["name"]: {"connection": str(settings["connection"]), model_field: str(llm["model"])}
        for node in nodes
        if node.get("type") == "llm"
    }
    return Run(
        flow=str(flow),
        data=str(data),
        column_mapping={field: f"${{data.{column}}}" for field, column in inputs.items()},
        connections=connections,
        name=name,
        display_name=f"{use_case} {variant}",
        tags={"use_case": use_case, "variant": variant, "llmops": "bulk-run"},
        environment_variables=dict(settings.get("environment_variables") or {}),
        **extra,
    )


def submit(client: Any, run: Any) -> Any:
    """Submit `run` unless a run of that name exists, stream its logs until it ends, and return it (completed)."""
    from promptflow._sdk._errors import RunNotFoundError

    try:
        existing = client.runs.get(run=run.name)
    except RunNotFoundError:
        existing = None
    if existing is None or str(existing.status) in {"Failed", "Canceled"}:
        client.runs.create_or_update(run)
    client.runs.stream(run=run.name)
    done = client.runs.get(run=run.name)
    if str(done.status) != "Completed":
        raise AzureExecutionError(f"Azure ML run {run.name} ended with status {done.status}")
    return done


def records(details: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run stage's records from the run's details (a DataFrame indexed by line number, `outputs.*` columns).
    A line without outputs failed on Azure ML: it is recorded with an error, never dropped."""
    by_line = {int(line): values for line, values in details.iterrows()}
    out = []
    for line, row in enumerate(rows):
        values = by_line.get(line)
        outputs = None
        if values is not None:
            found = {
                key.removeprefix("outputs."): value
                for key, value in values.items()
                if key.startswith("outputs.") and not (isinstance(value, float) and math.isnan(value))
            }
            outputs = found if any(v is not None for v in found.values()) else None
        error = None if outputs else f"line {line} failed in the Azure ML run (see the run's logs)"
        out.append({"row_id": row["row_id"], "outputs": outputs, "error": error, "latency_s": 0.0})
    return out


def workspace(settings: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for key, option in _WORKSPACE_KEYS:
        name = str(settings.get(option, ""))
        if not name or not env.get(name):
            raise AzureExecutionError(f"execution.{option}: environment variable {name or '(unset)'} is not set")
        values[key] = env[name]
    return values


def pf_client(settings: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """promptflow-azure's PFClient for the workspace, authenticated by DefaultAzureCredential."""
    try:
        from promptflow.azure import PFClient
    except ImportError as exc:
        raise AzureExecutionError(
            "execution: azure (params.yaml `execution.name`, conf/execution/azure.yaml) needs the promptflow-azure "
            "package: pip install -e '.[azure]' (or run locally: llmops params execution=local)"
        ) from exc
    from azure.identity import DefaultAzureCredential

    return PFClient(credential=DefaultAzureCredential(), **workspace(settings, env))


def run_variant(
    client: Any, use_case_name: str, use_case: Mapping[str, Any], variant: str, llm: Mapping[str, Any],
    settings: Mapping[str, Any], rows_file: Path, rows: list[dict[str, Any]], work: Path,
    node_variants: Mapping[str, tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One variant of a use case over the prepared rows on Azure ML: the run stage's records, in row order.
    `node_variants` ({node: (variant id, params key)}) are baked into the flow; an unknown one is an
    AzureExecutionError naming its params key."""
    block = use_case["variants"][variant]
    chosen = node_variants or {}
    try:
        flow = bake.bake_variant(
            Path(use_case["flow"]), block, llm, work / variant, {node: vid for node, (vid, _) in chosen.items()}
        )
    except NodeVariantError as exc:
        key = chosen[exc.node][1] if exc.node in chosen else f"use_cases.{use_case_name}.variants.{variant}"
        raise AzureExecutionError(f"{key}: {exc}") from exc
    inputs = datasets.input_columns(use_case["data"]["inputs"])
    name = run_name(use_case_name, variant, bake.flow_sha256(flow), rows_file)
    run = azure_run(name, use_case_name, variant, flow, rows_file, inputs, settings, llm)
    submit(client, run)
    return records(client.runs.get_details(run=name, all_results=True), rows)
