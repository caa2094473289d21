"""Import a use case of the "LLMOps with Prompt flow" template (experiment.yaml + overlays) into this project.

What maps: the standard flow, local datasets and their `${data.col}` mappings, the first evaluator (its flow,
dataset and `${data.x}` / `${run.outputs.y}` mappings) and env overlays that swap datasets. What does not map
(Azure ML data assets, extra datasets or evaluators, connections, runtimes) is reported, never guessed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages.core import catalogue

_DATA_REF = re.compile(r"^\$\{data\.([^}]+)\}$")
_RUN_REF = re.compile(r"^\$\{run\.outputs\.([^}]+)\}$")
ENVS = ("dev", "pr", "prod")


class ExperimentImportError(ValueError):
    """The experiment folder cannot be imported; the message names the file and the field."""


@dataclass
class ImportResult:
    name: str
    config: Path | None = None
    copied: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)


def load_experiment(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """experiment.yaml and its overlays, `experiment.<env>.yaml`, which replace whole top-level blocks."""
    base_file = folder / "experiment.yaml"
    if not base_file.is_file():
        raise ExperimentImportError(f"{folder}: no experiment.yaml")
    base = yaml.safe_load(base_file.read_text(encoding="utf-8")) or {}
    for key in ("name", "datasets", "evaluators"):
        if key not in base:
            raise ExperimentImportError(f"{base_file}: field '{key}' is missing")
    overlays = {}
    for overlay in sorted(folder.glob("experiment.*.yaml")):
        env = overlay.name.split(".")[1]
        overlays[env] = {**base, **(yaml.safe_load(overlay.read_text(encoding="utf-8")) or {})}
    return base, overlays


def _flow_folder(folder: Path, value: str, source: Path) -> Path:
    for candidate in (folder / value, folder / "flows" / value):
        if candidate.is_dir() or (candidate.suffix == ".prompty" and candidate.is_file()):
            return candidate
    raise ExperimentImportError(f"{source}: flow '{value}' not found (looked in {folder} and {folder / 'flows'})")


def _data_mappings(mappings: dict[str, str], where: str) -> dict[str, str]:
    columns = {}
    for flow_input, reference in (mappings or {}).items():
        match = _DATA_REF.match(str(reference).strip())
        if not match:
            raise ExperimentImportError(f"{where}: mapping '{flow_input}: {reference}' is not ${{data.<column>}}")
        columns[flow_input] = match.group(1)
    return columns


def _eval_mapping(mappings: dict[str, str], where: str) -> dict[str, str]:
    result = {}
    for name, reference in (mappings or {}).items():
        text = str(reference).strip()
        if data := _DATA_REF.match(text):
            result[name] = f"data.{data.group(1)}"
        elif run := _RUN_REF.match(text):
            result[name] = f"outputs.{run.group(1)}"
        else:
            raise ExperimentImportError(
                f"{where}: mapping '{name}: {reference}' is neither ${{data.x}} nor ${{run.outputs.y}}"
            )
    return result


def _evaluation_dataset(experiment: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The dataset the first evaluator reads (a standard dataset, or its own source) and its mappings."""
    datasets = {d["name"]: d for d in experiment["datasets"]}
    evaluator = experiment["evaluators"][0]
    entry = evaluator["datasets"][0]
    mapping = _eval_mapping(entry.get("mappings", {}), f"{where}: evaluators[0].datasets[0]")
    if "source" in entry:
        reference = entry.get("reference")
        if reference not in datasets:
            raise ExperimentImportError(f"{where}: evaluators[0].datasets[0].reference '{reference}' names no dataset")
        return {**entry, "flow_mappings": datasets[reference].get("mappings", {})}, mapping
    if entry["name"] not in datasets:
        raise ExperimentImportError(f"{where}: evaluators[0].datasets[0] '{entry['name']}' names no dataset")
    standard = datasets[entry["name"]]
    return {**standard, "flow_mappings": standard.get("mappings", {})}, mapping


def _first_output(flow_dir: Path) -> str:
    dag = flow_dir / "flow.dag.yaml"
    outputs = list((yaml.safe_load(dag.read_text(encoding="utf-8")) or {}).get("outputs", {})) if dag.is_file() else []
    return outputs[0] if outputs else "correct"


def import_experiment(root: Path, folder: Path, name: str | None = None) -> ImportResult:
    """Copy the flows and local datasets into use_cases/<name>/, write its config, list what did not map."""
    base, overlays = load_experiment(folder)
    where = str(folder / "experiment.yaml")
    name = name or re.sub(r"[^a-z0-9_]", "_", str(base["name"]).lower())
    try:
        catalogue.check_name(name)  # before anything is copied: a bad name must leave the project untouched
    except catalogue.CatalogueError as exc:
        raise ExperimentImportError(f"{where}: name '{base['name']}' -> {exc}; pass a name with --name") from None
    result = ImportResult(name=name)
    target = root / "use_cases" / name
    if target.exists():
        raise ExperimentImportError(f"{target} exists already")

    standard_flow = _flow_folder(folder, base.get("flow") or base["name"], folder / "experiment.yaml")
    evaluator = base["evaluators"][0]
    eval_flow = _flow_folder(folder, evaluator.get("flow") or evaluator["name"], folder / "experiment.yaml")
    dataset, eval_mapping = _evaluation_dataset(base, where)
    inputs = _data_mappings(
        dataset["flow_mappings"], f"{where}: datasets '{dataset.get('reference', dataset['name'])}'"
    )

    by_env: dict[str, str] = {}
    for env, experiment in {"": base, **overlays}.items():
        chosen, _ = _evaluation_dataset(experiment, f"{folder}/experiment.{env}.yaml" if env else where)
        source = str(chosen["source"])
        if source.startswith("azureml:"):
            result.not_mapped.append(
                f"{'experiment.' + env + '.yaml' if env else 'experiment.yaml'}: dataset '{chosen['name']}' is an "
                f"Azure ML data asset ({source}); download it, then `dvc add` it under use_cases/{name}/data/"
            )
            continue
        local = (folder / source).resolve()
        if not local.is_file():
            raise ExperimentImportError(f"{where}: dataset source {source} not found")
        destination = target / "data" / local.name
        if not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, destination)
            catalogue.dvc_add(root, str(destination.relative_to(root)))
            result.copied.append(str(destination.relative_to(root)))
        by_env[env] = str(destination.relative_to(root))
    if "" not in by_env:
        raise ExperimentImportError(f"{where}: the evaluation dataset is not a local file, nothing to run on")

    for flow in (standard_flow, eval_flow):
        shutil.copytree(flow, target / "flows" / flow.name, ignore=shutil.ignore_patterns(".promptflow", "__pycache__"))
        result.copied.append(f"use_cases/{name}/flows/{flow.name}")

    data_columns = [column for source in eval_mapping.values() if source.startswith("data.")
                    for column in [source.removeprefix("data.")] if column not in inputs.values()]  # fmt: skip
    if not data_columns:
        raise ExperimentImportError(f"{where}: evaluators[0] maps no ground-truth column (${{data.<column>}})")
    outputs = [source.removeprefix("outputs.") for source in eval_mapping.values() if source.startswith("outputs.")]
    spec = catalogue.UseCaseSpec(
        name=name,
        dataset=by_env[""],
        flow=f"use_cases/{name}/flows/{standard_flow.name}",
        eval_flow=f"use_cases/{name}/flows/{eval_flow.name}",
        inputs=inputs,
        label=data_columns[0],
        mapping=eval_mapping,
        prediction=outputs[0] if outputs else "output",
        correct=_first_output(eval_flow),
        datasets_by_env={env: by_env.get(env, by_env[""]) for env in ENVS} if len(by_env) > 1 else None,
    )
    result.config = catalogue.add(root, spec)

    for extra in base["datasets"]:
        if extra["name"] != dataset.get("reference", dataset["name"]):
            kind = "an Azure ML data asset, " if str(extra.get("source", "")).startswith("azureml:") else ""
            result.not_mapped.append(
                f"experiment.yaml: dataset '{extra['name']}' ({kind}{extra.get('source')}): a use case runs one "
                "dataset; import it as another use case or merge its rows"
            )
    for extra in base["evaluators"][1:]:
        result.not_mapped.append(f"experiment.yaml: evaluator '{extra['name']}' (one evaluation flow per use case)")
    for connection in base.get("connections") or []:
        result.not_mapped.append(
            f"experiment.yaml: connection '{connection.get('name')}' ({connection.get('connection_type')}): "
            "connections come from conf/llm; for Azure OpenAI use `-S llm=azure_openai` and set "
            "AZURE_OPENAI_ENDPOINT / AZURE_OPENAI_API_KEY in .env (secrets are not copied)"
        )
    if "runtime" in base:
        result.not_mapped.append("experiment.yaml: runtime (flows run locally in-process)")
    return result
