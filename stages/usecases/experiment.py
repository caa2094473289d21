"""Experiment files of the reference template (microsoft/genaiops-promptflow-template), read by its own rules.

`experiment.yaml` names the standard flow, its datasets (each with the mappings of the flow's inputs) and the
evaluators (each an evaluation flow with its datasets: a standard dataset by name, or an evaluation dataset of
its own that `reference`s one). An overlay `experiment.<env>.yaml`, for any env name, replaces only the blocks it
names (`datasets`, `evaluators`, `connections`, `runtime`); an empty block empties it. The rules follow the
template's `llmops/common/experiment.py` at b96252e (its tests are the spec); every error names the file and key.
Pure: reads YAML files, never touches the project.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages.core.yaml_reader import load_yaml

EXPERIMENT_FILE = "experiment.yaml"
FLOW_FILES = ("flow.dag.yaml", "flow.flex.yaml")
DATA_DIR = "data"


class ExperimentError(ValueError):
    """An experiment file the template's rules reject; the message names the file and the key."""


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # a path (relative to the experiment folder, else to its data/) or `azureml:<name>:<version>`
    description: str | None = None
    reference: str | None = None  # an evaluation dataset: the standard dataset it is row-aligned with

    @property
    def is_eval(self) -> bool:
        return self.reference is not None

    @property
    def is_remote(self) -> bool:
        return self.source.startswith("azureml:")

    def local_source(self, base: Path) -> Path | None:
        """`<base>/<source>` if it exists, else `<base>/data/<source>`; None for an Azure ML data asset."""
        if self.is_remote:
            return None
        direct = base / self.source
        return direct if direct.exists() else base / DATA_DIR / self.source


@dataclass(frozen=True)
class MappedDataset:
    dataset: Dataset
    mappings: Mapping[str, Any]  # flow input -> `${data.<column>}`, `${run.outputs.<name>}` or a literal value


@dataclass(frozen=True)
class Evaluator:
    name: str
    datasets: tuple[MappedDataset, ...]
    path: Path  # the evaluation flow's folder
    where: str = field(default="", compare=False)  # file and key, for messages

    def datasets_for(self, standard: str) -> list[MappedDataset]:
        """This evaluator's datasets that evaluate a run on standard dataset `standard` (itself or a reference)."""
        return [d for d in self.datasets if standard in (d.dataset.reference, d.dataset.name)]


@dataclass
class Experiment:
    base_path: Path
    name: str
    flow: str
    datasets: list[MappedDataset]
    evaluators: list[Evaluator]
    runtime: str | None = None
    connections: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the files read: experiment.yaml, then the overlay

    def dataset(self, name: str) -> MappedDataset | None:
        """The standard dataset `name` with its flow mappings."""
        return next((d for d in self.datasets if d.dataset.name == name), None)


def _missing(keys: tuple[str, ...], raw: Mapping[str, Any], where: str, what: str) -> None:
    for key in keys:
        if key not in raw:
            raise ExperimentError(f"{where}: {what} is missing '{key}'")


def _unexpected(keys: tuple[str, ...], raw: Mapping[str, Any], where: str, why: str) -> None:
    for key in keys:
        if key in raw:
            raise ExperimentError(f"{where}.{key}: not allowed ({why})")


def _entries(raw: Any, where: str) -> list[Mapping[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(entry, Mapping) for entry in raw):
        raise ExperimentError(f"{where}: expected a list of mappings, got {raw!r}")
    return raw


def _mappings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    value = raw["mappings"]
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ExperimentError(f"{where}.mappings: expected {{flow input: value}}, got {value!r}")
    return dict(value)


def _label(raw: Mapping[str, Any]) -> str:
    return f"dataset '{raw.get('name')}'"


def standard_datasets(raw: Any, where: str) -> tuple[dict[str, Dataset], list[MappedDataset]]:
    """A `datasets` block: each needs name, source and mappings, and no `reference` (that is an evaluator's)."""
    datasets: dict[str, Dataset] = {}
    mapped = []
    for index, entry in enumerate(_entries(raw, where)):
        at = f"{where}[{index}]"
        _missing(("name", "source", "mappings"), entry, at, _label(entry))
        _unexpected(
            ("reference",),
            entry,
            at,
            f"{_label(entry)} is a standard dataset; only an evaluator's dataset references one",
        )
        dataset = Dataset(str(entry["name"]), str(entry["source"]), entry.get("description"))
        datasets[dataset.name] = dataset
        mapped.append(MappedDataset(dataset, _mappings(entry, at)))
    return datasets, mapped


def evaluation_datasets(raw: Any, existing: Mapping[str, Dataset], where: str) -> list[MappedDataset]:
    """An evaluator's `datasets`: a standard dataset by name (no source, no reference), or a dataset of its own
    with a source and the `reference` of the standard dataset it evaluates; each with its own mappings."""
    mapped = []
    for index, entry in enumerate(_entries(raw, where)):
        at = f"{where}[{index}]"
        _missing(("name", "mappings"), entry, at, _label(entry))
        name = str(entry["name"])
        if name in existing:
            _unexpected(("source", "reference"), entry, at, f"'{name}' is the standard dataset of that name")
            dataset = existing[name]
        else:
            _missing(("source", "reference"), entry, at, f"{_label(entry)} (not a standard dataset)")
            dataset = Dataset(name, str(entry["source"]), entry.get("description"), str(entry["reference"]))
            if dataset.reference not in existing:
                known = ", ".join(existing) or "none"
                raise ExperimentError(
                    f"{at}.reference: referenced dataset '{dataset.reference}' not defined (standard datasets: {known})"
                )
        mapped.append(MappedDataset(dataset, _mappings(entry, at)))
    return mapped


def flow_dir(base: Path, flow: str) -> Path:
    """`<base>/<flow>`, or `<base>/flows/<flow>` when only that holds a flow file (the template's docstring)."""
    direct = base / flow
    if any((direct / name).is_file() for name in FLOW_FILES) or direct.suffix == ".prompty":
        return direct
    nested = base / "flows" / flow
    return nested if any((nested / name).is_file() for name in FLOW_FILES) else direct


def evaluators(raw: Any, datasets: Mapping[str, Dataset], base: Path, where: str) -> list[Evaluator]:
    """An `evaluators` block: each needs a name and datasets; its flow is `flow`, else its name."""
    result = []
    for index, entry in enumerate(_entries(raw, where)):
        at = f"{where}[{index}]"
        _missing(("name", "datasets"), entry, at, f"evaluator '{entry.get('name')}'")
        mapped = evaluation_datasets(entry["datasets"], datasets, f"{at}.datasets")
        name = str(entry["name"])
        path = flow_dir(base, str(entry.get("flow") or name))
        result.append(Evaluator(name, tuple(mapped), path, at))
    return result


def _read(file: Path) -> dict[str, Any]:
    try:
        loaded = load_yaml(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ExperimentError(f"{file}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ExperimentError(f"{file}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def load_base(file: Path, base: Path) -> Experiment:
    """experiment.yaml on its own: name, flow (default: the name), datasets (at least one), evaluators."""
    raw = _read(file)
    _missing(("name",), raw, str(file), "the experiment")
    if not raw.get("datasets"):
        raise ExperimentError(f"{file}: datasets: no datasets configured for the experiment")
    known, mapped = standard_datasets(raw["datasets"], f"{file}: datasets")
    return Experiment(
        base_path=base,
        name=str(raw["name"]),
        flow=str(raw.get("flow") or raw["name"]),
        datasets=mapped,
        evaluators=evaluators(raw.get("evaluators"), known, base, f"{file}: evaluators"),
        runtime=raw.get("runtime"),
        connections=list(_entries(raw.get("connections"), f"{file}: connections")),
        files=[str(file)],
    )


def apply_overlay(experiment: Experiment, file: Path) -> Experiment:
    """A copy of `experiment` with the blocks the overlay names replaced (an empty block empties it). Evaluators
    of an overlay without `datasets` resolve against the experiment's datasets; those of the base are kept
    as resolved when the overlay names no `evaluators`."""
    raw = _read(file)
    result = copy.deepcopy(experiment)
    result.files = [*experiment.files, str(file)]
    if not raw:
        return result
    known = {d.dataset.name: d.dataset for d in result.datasets}
    if "datasets" in raw:
        known, result.datasets = standard_datasets(raw["datasets"], f"{file}: datasets")
    if "evaluators" in raw:
        result.evaluators = evaluators(raw["evaluators"], known, experiment.base_path, f"{file}: evaluators")
    if "connections" in raw:
        result.connections = list(_entries(raw["connections"], f"{file}: connections"))
    if "runtime" in raw:
        result.runtime = raw["runtime"]
    return result


def overlay_file(folder: Path, env: str, filename: str = EXPERIMENT_FILE) -> Path:
    stem, dot, suffix = filename.rpartition(".")
    return folder / f"{stem}.{env}.{suffix}" if dot else folder / f"{filename}.{env}"


def envs(folder: Path, filename: str = EXPERIMENT_FILE) -> list[str]:
    """The env names of the overlays beside `filename` (`experiment.<env>.yaml`, any name), sorted."""
    stem, _, suffix = filename.rpartition(".")
    found = []
    for path in folder.glob(f"{stem}.*.{suffix}"):
        env = path.name[len(stem) + 1 : -len(suffix) - 1]
        if env and "." not in env and path.is_file():
            found.append(env)
    return sorted(found)


def load(folder: Path, env: str | None = None, filename: str = EXPERIMENT_FILE) -> Experiment:
    """The experiment in `folder` for `env`: experiment.yaml with experiment.<env>.yaml applied if it exists."""
    file = folder / filename
    if not file.is_file():
        raise ExperimentError(f"{file}: no such experiment file")
    experiment = load_base(file, folder)
    overlay = overlay_file(folder, env, filename) if env else None
    return apply_overlay(experiment, overlay) if overlay and overlay.is_file() else experiment
