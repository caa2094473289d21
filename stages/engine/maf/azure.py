"""MAF workflows on Azure ML: `execution: azure` runs a MAF bulk run as an Azure ML parallel job (the pattern of
Microsoft's `maf-prs-job` sample), and the azureml deploy target serves a MAF use case from an online endpoint (its
`maf-online-endpoint` sample: score.py + an environment).

Both ship one package per variant (`package`): the flow folder (`flow/`), worker.py (whose `execute` runs a row
exactly as a local run does) and llmops_maf.py (the runtime migrated workflows import), the PRS entry script and
score.py (stages/templates/maf_azure/), `llmops_run.json` (the variant's `create_workflow(**params)` and the flow
inputs' dataset columns) and `conda.yml` (the pinned MAF requirements, requirements.txt, plus what the Azure ML
runtime needs). No LLM proxy runs on Azure ML: the workflow reads the endpoint and model from the job's or
deployment's environment variables (`cloud_environment`); keys are never written: give the compute's identity
access, or add a variable of your own in the config.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.data import datasets
from stages.engine import bake
from stages.engine.binding import DEFAULT_AZURE_API_VERSION
from stages.engine.maf import environment

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "maf_azure"
WORKER = Path(__file__).with_name("worker.py")
RUNTIME = Path(__file__).with_name("llmops_maf.py")  # what migrated workflows import (on the worker's path locally)
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"  # the samples' base image
ENTRY_SCRIPT, SCORING_SCRIPT, SETTINGS_FILE = "prs_entry.py", "score.py", "llmops_run.json"
# What the Azure ML runtimes need beside the workflow (from Microsoft's maf-prs-job / maf-online-endpoint samples).
PRS_PACKAGES = ("azureml-core>=1.59.0", "azureml-dataset-runtime>=1.59.0", "mltable>=1.6.0", "pandas>=2.2.0")
SERVING_PACKAGES = ("azureml-inference-server-http>=1.3.0",)
# The PRS flags that make it read a jsonl uri_file row by row (maf-prs-job's references/gotchas.md, #12).
PRS_ARGUMENTS = "--amlbi_pf_enabled True --amlbi_pf_run_mode component --amlbi_file_format jsonl"


class MafAzureError(RuntimeError):
    """A MAF package or job that cannot be made; the message names the key or the file."""


def variant_params(block: Mapping[str, Any], api: str, where: str) -> dict[str, Any]:
    """What a variant gives `create_workflow(**params)` (as in a local run: stages/engine/maf/adapter.py): its
    prompt file for the connection's API, and its LLM params."""
    prompt = block.get("prompt")
    if isinstance(prompt, Mapping):
        if api not in prompt:
            raise MafAzureError(f"{where}.prompt: no prompt for the {api} API; has {', '.join(sorted(prompt))}")
        prompt = prompt[api]
    return {**({"prompt": str(prompt)} if prompt else {}), **dict(block.get("params") or {})}


def cloud_environment(llm: Mapping[str, Any]) -> dict[str, str]:
    """The variables a workflow's clients read on Azure ML (as the worker's in a local run, without the proxy):
    the model or deployment, the API version and, when the config names it, the endpoint. Never a key."""
    version = str(llm.get("api_version") or DEFAULT_AZURE_API_VERSION)
    values = {"OPENAI_MODEL": str(llm["model"]), "AZURE_OPENAI_DEPLOYMENT": str(llm["model"]),
              "OPENAI_API_VERSION": version, "AZURE_OPENAI_API_VERSION": version}  # fmt: skip
    if llm.get("base_url"):
        values.update(OPENAI_BASE_URL=str(llm["base_url"]), AZURE_OPENAI_ENDPOINT=str(llm["base_url"]))
    return values


def conda_spec(extra: tuple[str, ...], requirements: Path = environment.REQUIREMENTS) -> dict[str, Any]:
    """The conda environment of a package: Python and the MAF environment's pins, then `extra`."""
    pins = [line.strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    pins = [line for line in pins if line and not line.startswith("#")]
    return {"name": "llmops-maf", "channels": ["conda-forge"],
            "dependencies": ["python=3.11", "pip", {"pip": [*pins, *extra]}]}  # fmt: skip


def package(flow: Path, params: Mapping[str, Any], inputs: Mapping[str, str], out: Path, extra: tuple[str, ...],
            row_timeout_s: float | None = None, env: Mapping[str, str] | None = None) -> Path:  # fmt: skip
    """A self-contained folder an Azure ML job or deployment runs (see the module's docstring); rebuilt from
    scratch, so its content hash (bake.flow_sha256) changes exactly when what it runs changes. `env` (never a
    secret) is set where the job or deployment did not set it."""
    shutil.rmtree(out, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", ".promptflow", "*.pyc")
    shutil.copytree(flow, out / "flow", ignore=ignore)
    for source in (WORKER, RUNTIME, TEMPLATES / ENTRY_SCRIPT, TEMPLATES / SCORING_SCRIPT):
        shutil.copy2(source, out / source.name)
    settings = {"params": dict(params), "inputs": dict(inputs), "row_timeout_s": row_timeout_s, "env": dict(env or {})}
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "conda.yml").write_text(yaml.safe_dump(conda_spec(extra), sort_keys=False), encoding="utf-8")
    return out


def is_package(path: Path) -> bool:
    """Whether `path` is a MAF package (`package`), not a baked prompt flow flow."""
    return (path / SETTINGS_FILE).is_file() and (path / "flow" / "workflow.py").is_file()


def packages(use_case_name: str, use_case: Mapping[str, Any], variants: list[str], llm: Mapping[str, Any],
             out: Path) -> dict[str, Path]:  # fmt: skip
    """Each variant's online endpoint package (score.py), the inputs of a request being the flow's inputs."""
    inputs = {name: name for name in datasets.input_columns(use_case["data"]["inputs"])}
    out_packages = {}
    for variant in variants:
        where = f"use_cases.{use_case_name}.variants.{variant}"
        params = variant_params(use_case["variants"][variant], str(llm.get("api", "chat")), where)
        out_packages[variant] = package(Path(use_case["flow"]), params, inputs, out / variant, SERVING_PACKAGES,
                                        env=cloud_environment(llm))  # fmt: skip
    return out_packages


def deployment_entity(name: str, endpoint: str, code: Path, instance: tuple[str, int], env: Mapping[str, str],
                      tags: Mapping[str, str]) -> Any:  # fmt: skip
    """The ManagedOnlineDeployment of a MAF package (maf-online-endpoint's shape): score.py and the package as its
    code configuration, its environment from the package's conda.yml; no model (the workflow is in the code)."""
    from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment

    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        code_configuration=CodeConfiguration(code=str(code), scoring_script=SCORING_SCRIPT),
        environment=Environment(image=IMAGE, conda_file=str(code / "conda.yml")),
        instance_type=instance[0],
        instance_count=instance[1],
        environment_variables=dict(env),
        tags=dict(tags),
    )


def job_name(use_case: str, variant: str, code: Path, data: Path) -> str:
    """A deterministic job name: the same package and data give the same name (a resubmission finds the job)."""
    data_sha = hashlib.sha256(data.read_bytes()).hexdigest()
    return f"{use_case}-{variant}-maf-{bake.flow_sha256(code)[:10]}-{data_sha[:10]}"


def parallel_job(name: str, use_case: str, variant: str, code: Path, data: Path, settings: Mapping[str, Any],
                 llm: Mapping[str, Any]) -> Any:  # fmt: skip
    """The pipeline job of one parallel step over the prepared rows (a jsonl uri_file): the PRS entry script on the
    package, its environment from conda.yml, on serverless compute (`execution.compute.instance_type`) or a
    cluster (`execution.compute.cluster`); each row's record appended to the `flow_outputs` file."""
    from azure.ai.ml import Input, Output
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.dsl import pipeline
    from azure.ai.ml.entities import Environment
    from azure.ai.ml.parallel import RunFunction, parallel_run_function

    compute = dict(settings.get("compute") or {"instance_type": "Standard_D2as_v5"})
    parallel = dict(settings.get("parallel") or {})
    step = parallel_run_function(
        name="maf_bulk_run",
        display_name=f"{use_case} {variant} (MAF)",
        inputs={"data": Input(type=AssetTypes.URI_FILE, mode="ro_mount")},
        outputs={"flow_outputs": Output(type=AssetTypes.URI_FILE, mode="rw_mount")},
        input_data="${{inputs.data}}",
        mini_batch_size=str(parallel.get("mini_batch_size", 10)),
        max_concurrency_per_instance=int(parallel.get("max_concurrency_per_instance", 2)),
        instance_count=int(parallel.get("instance_count", 1)),
        instance_type=None if compute.get("cluster") else str(compute["instance_type"]),
        compute=str(compute["cluster"]) if compute.get("cluster") else None,
        error_threshold=-1,  # a row's failure is its record's error, as in a local run
        mini_batch_error_threshold=-1,
        retry_settings={"max_retries": int(parallel.get("max_retries", 1)),
                        "timeout": int(parallel.get("timeout_s", 1200))},
        environment_variables={**cloud_environment(llm), **dict(settings.get("environment_variables") or {})},
        task=RunFunction(
            code=str(code),
            entry_script=ENTRY_SCRIPT,
            program_arguments=f"{PRS_ARGUMENTS} --amlbi_mini_batch_rows {int(parallel.get('mini_batch_size', 10))}",
            environment=Environment(image=IMAGE, conda_file=str(code / "conda.yml")),
            append_row_to="${{outputs.flow_outputs}}",
        ),
    )  # fmt: skip

    @pipeline(name=name, display_name=f"{use_case} {variant} (MAF bulk run)")
    def bulk_run(rows):  # no annotation: the dsl reads annotations as input types
        node = step(data=rows)
        return {"flow_outputs": node.outputs.flow_outputs}

    job = bulk_run(rows=Input(type=AssetTypes.URI_FILE, path=str(data)))
    job.name = name
    job.tags = {"use_case": use_case, "variant": variant, "llmops": "bulk-run", "engine": "maf"}
    if not compute.get("cluster"):
        job.settings.default_compute = "serverless"
    return job


def submit(client: Any, job: Any, experiment: str) -> None:
    """Submit `job` unless a job of that name exists (and did not fail), stream it until it ends; raises
    MafAzureError unless it completed."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = client.jobs.get(job.name)
    except ResourceNotFoundError:
        existing = None
    if existing is None or str(existing.status) in {"Failed", "Canceled"}:
        client.jobs.create_or_update(job, experiment_name=experiment)
    client.jobs.stream(job.name)
    done = client.jobs.get(job.name)
    if str(done.status) != "Completed":
        raise MafAzureError(f"Azure ML job {job.name} ended with status {done.status}")


def records(folder: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run stage's records, in row order, from the downloaded `flow_outputs` (one JSON line per row the entry
    script answered; PRS may keep the line as it is or its `output` field). A row with no line failed on Azure ML:
    it is recorded with an error, never dropped."""
    by_line: dict[int, dict[str, Any]] = {}
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        for text in file.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            record = line.get("output") if isinstance(line, dict) and isinstance(line.get("output"), dict) else line
            if isinstance(record, dict) and "row_id" in record:
                number = line.get("line_number") if isinstance(line, dict) else None
                key = int(number) if number is not None else next(
                    (i for i, row in enumerate(rows) if row["row_id"] == record["row_id"]), -1
                )  # fmt: skip
                by_line[key] = record
    out = []
    for number, row in enumerate(rows):
        record = by_line.get(number)
        if record is None or record.get("row_id") != row["row_id"]:
            error = f"line {number} failed in the Azure ML job (see the job's logs)"
            out.append({"row_id": row["row_id"], "outputs": None, "error": error, "latency_s": 0.0})
            continue
        out.append({"row_id": row["row_id"], "outputs": record.get("outputs"), "error": record.get("error"),
                    "latency_s": float(record.get("latency_s") or 0.0)})  # fmt: skip
    return out


def ml_client(workspace: Mapping[str, str]) -> Any:
    """An MLClient for the workspace (subscription_id, resource_group_name, workspace_name), authenticated by
    DefaultAzureCredential."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), **workspace)


def run_variant(client: Any, use_case_name: str, use_case: Mapping[str, Any], variant: str, llm: Mapping[str, Any],
                settings: Mapping[str, Any], rows_file: Path, rows: list[dict[str, Any]], work: Path,
                inputs: Mapping[str, str], row_timeout_s: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One variant of a MAF use case over the prepared rows as an Azure ML parallel job: the run stage's records,
    in row order."""
    where = f"use_cases.{use_case_name}.variants.{variant}"
    params = variant_params(use_case["variants"][variant], str(llm.get("api", "chat")), where)
    code = package(
        Path(use_case["flow"]), params, inputs, work / variant, PRS_PACKAGES, row_timeout_s, cloud_environment(llm)
    )
    name = job_name(use_case_name, variant, code, rows_file)
    submit(client, parallel_job(name, use_case_name, variant, code, rows_file, settings, llm), "llmops-maf")
    download = work / f"{variant}-outputs"
    shutil.rmtree(download, ignore_errors=True)
    client.jobs.download(name, output_name="flow_outputs", download_path=str(download))
    return records(download, rows)
