"""Import an experiment folder of the reference template (experiment.yaml + experiment.<env>.yaml overlays, its
flows and local datasets) as use cases of this project: all or nothing.

The files are read by the template's own rules (stages.usecases.experiment). Each dataset of each evaluator becomes
a use case: the standard flow runs on the standard dataset that evaluator dataset evaluates (itself, or the one
it `reference`s) with that dataset's mappings, and the evaluation flow reads the evaluator dataset's columns,
joined to the standard rows by line as prompt flow joins an evaluation run's data to its base run. What prompt
flow would do with a mapping (ignore one that names no flow input, map an input without default to the column of
its name) is done here too, and said. Every choice is reported; what cannot map is listed, never guessed.

Everything is built in a folder beside use_cases/ and moved into place, configs written and datasets `dvc add`ed
(which git-stages them) only once every check passed; a failure on the way undoes what was done.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stages import engine
from stages.core.io import write_text
from stages.core.project import load_params
from stages.data import datasets
from stages.usecases import catalogue, flow_facts
from stages.usecases import experiment as exp

_REFERENCE = re.compile(r"^\$\{([^}]*)\}$")
_NUMBERS = ("int", "double", "float", "number")


class ExperimentImportError(ValueError):
    """The experiment folder cannot be imported; the message names the file and the key."""


@dataclass
class ImportResult:
    folder: str = ""  # use_cases/<name>, relative to the project root
    use_cases: list[tuple[str, Path]] = field(default_factory=list)  # name, config file
    copied: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)  # per use case: every choice made, and warnings
    not_mapped: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said, nothing to do (e.g. a renamed requirement satisfied)


@dataclass(frozen=True)
class Pairing:
    """One dataset of one evaluator, with the standard dataset whose run it evaluates."""

    evaluator: exp.Evaluator
    index: int  # of the dataset in the evaluator's list
    eval_data: exp.MappedDataset
    standard: exp.MappedDataset
    where: str  # e.g. "experiment.yaml: evaluators[0].datasets[1]"
    standard_where: str = ""  # e.g. "experiment.yaml: datasets[0]"


@dataclass
class Plan:
    """What one use case runs in one env: the rows written, the flow's inputs, the evaluation's mapping."""

    rows: list[dict[str, Any]]
    file_name: str
    sources: str  # the source files the rows come from, for messages
    inputs: dict[str, str]  # flow input -> column
    mapping: dict[str, str]  # eval flow input -> data.<column> | outputs.<name>
    label: str
    eval_flow: Path
    notes: list[str] = field(default_factory=list)


class _NotMappable(Exception):
    """A pairing this project cannot run (an Azure ML data asset, an evaluator that is no flow)."""


def _rows(count: int) -> str:
    return f"{count} row{'s' * (count != 1)}"


def slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def _short(text: str, folder: Path) -> str:
    """`text` with the experiment folder's path left out of the file names it mentions."""
    return text.replace(f"{folder}/", "")


def parse_reference(value: Any, where: str) -> tuple[str, Any]:
    """A mapping value: `${data.c}` -> (data, c), `${run.outputs.x}` or `${target.x}` -> (outputs, x),
    `${run.inputs.x}` -> (inputs, x); anything that is not `${...}` is a literal (literal, value)."""
    if not isinstance(value, str) or not value.strip().startswith("${"):
        return "literal", value
    match = _REFERENCE.match(value.strip())
    body = match.group(1).strip() if match else ""
    for prefix, scope in (
        ("data.", "data"),
        ("run.outputs.", "outputs"),
        ("target.outputs.", "outputs"),
        ("target.", "outputs"),
        ("run.inputs.", "inputs"),
    ):
        if body.startswith(prefix) and body[len(prefix) :]:
            return scope, body[len(prefix) :]
    raise ExperimentImportError(
        f"{where}: {value!r} is none of ${{data.<column>}}, ${{run.outputs.<output>}}, ${{run.inputs.<input>}}, "
        "${target.<output>} or a literal value"
    )


def _read_rows(path: Path, where: str, max_row_bytes: int) -> list[dict[str, Any]]:
    """The JSON objects of a template dataset, read as the prepare stage reads rows (a BOM accepted, a bad byte or
    a row over `prepare.max_row_bytes` named with its line)."""
    if not path.is_file():
        raise ExperimentImportError(f"{where}: dataset source {path} not found")
    try:
        rows = [row for _, row in datasets.json_objects(path, max_row_bytes)]
    except datasets.DatasetError as exc:
        raise ExperimentImportError(str(exc)) from None
    if not rows:
        raise ExperimentImportError(f"{where}: {path} has no rows")
    return rows


def pairings(experiment: exp.Experiment, file: str) -> tuple[list[Pairing], list[str]]:
    """Every (evaluator, dataset) of the experiment with its standard dataset, and what cannot be paired."""
    found, notes = [], []
    for e, evaluator in enumerate(experiment.evaluators):
        for d, mapped in enumerate(evaluator.datasets):
            where = f"{file}: evaluators[{e}].datasets[{d}]"
            standard_name = mapped.dataset.reference or mapped.dataset.name
            standard = experiment.dataset(standard_name)
            if standard is None:
                notes.append(
                    f"{where} ('{mapped.dataset.name}'): evaluates '{standard_name}', which is not among "
                    "this file's datasets: the template evaluates nothing with it"
                )
                continue
            std_where = f"{file}: datasets[{experiment.datasets.index(standard)}]"
            found.append(Pairing(evaluator, d, mapped, standard, where, std_where))
    return found, notes


def _rows_of(dataset: exp.Dataset, folder: Path, where: str, max_row_bytes: int) -> tuple[list[dict[str, Any]], Path]:
    if dataset.is_remote:
        raise _NotMappable(
            f"{where}: dataset '{dataset.name}' is an Azure ML data asset ({dataset.source}): download it into "
            f"{folder}/data/, point `source` at the file and import again"
        )
    path = dataset.local_source(folder)
    assert path is not None
    return _read_rows(path, f"{where} ('{dataset.name}')", max_row_bytes), path


def plan(pairing: Pairing, folder: Path, facts: flow_facts.FlowFacts, file_name: str, max_row_bytes: int) -> Plan:
    """The rows and mappings of one pairing: the standard rows with the evaluator dataset's columns joined by line
    (and literal values as constant columns), the flow's inputs and the evaluation's mapping as this project
    names them. Follows prompt flow: a mapping to no input of the flow is ignored, an input without default
    and without mapping reads the column of its name."""
    try:
        eval_facts = flow_facts.read(pairing.evaluator.path)
    except engine.FlowError as exc:
        raise _NotMappable(
            f"{pairing.evaluator.where}: evaluator '{pairing.evaluator.name}': {exc}; the template cannot run it either"
        ) from None
    standard_where = pairing.standard.dataset.name
    std_rows, std_path = _rows_of(pairing.standard.dataset, folder, f"dataset '{standard_where}'", max_row_bytes)
    notes: list[str] = []
    columns = set().union(*std_rows)
    inputs: dict[str, str] = {}
    constants: dict[str, Any] = {}
    std_key = f"{pairing.standard_where or pairing.standard.dataset.name}.mappings"
    for flow_input, value in pairing.standard.mappings.items():
        key = f"{std_key}.{flow_input}"
        if facts.inputs and flow_input not in facts.inputs:
            notes.append(
                f"NOT MAPPED {key}: {facts.file} has no input {flow_input!r} (inputs: "
                f"{', '.join(facts.inputs)}); prompt flow ignores it, and so does the import"
            )
            continue
        scope, ref = parse_reference(value, key)
        if scope == "data":
            if ref not in columns:
                raise ExperimentImportError(
                    f"{key}: column {ref!r} is not in {std_path} (columns: {', '.join(sorted(columns))})"
                )
            inputs[flow_input] = ref
        elif scope == "literal":
            inputs[flow_input] = f"const_{flow_input}"
            constants[f"const_{flow_input}"] = value
            notes.append(f"{key}: the literal {value!r} becomes the column const_{flow_input} of every row")
        else:
            raise ExperimentImportError(f"{key}: {value!r}: a standard dataset's mapping reads data columns only")
    for flow_input, (_, required) in facts.inputs.items():
        if required and flow_input not in inputs:
            if flow_input not in columns:
                raise ExperimentImportError(
                    f"{std_key}: {facts.file} input {flow_input!r} has no default, no "
                    f"mapping and no column of its name in {std_path}"
                )
            inputs[flow_input] = flow_input
            notes.append(
                f"{std_key}: flow input {flow_input} (no default, not mapped) reads the column "
                f"{flow_input}, as prompt flow does"
            )
    for flow_input, (_, required) in facts.inputs.items():
        if not required and flow_input not in inputs:
            notes.append(f"flow input {flow_input} is not mapped: every row runs on its default")
    if facts.inputs and not inputs:  # prompt flow would run every row on the same defaults: nothing to compare
        shared = [name for name in facts.inputs if name in columns]  # every input the rows have a column for
        hint = f" (the rows have columns for {', '.join(f'{n}: ${{data.{n}}}' for n in shared)})" if shared else ""
        raise ExperimentImportError(
            f"{std_key}: maps no input of {_short(str(facts.file), folder)} (inputs: {', '.join(facts.inputs)}), "
            f"and each has a default, so every row would run on the defaults, as prompt flow runs it: map the "
            f"inputs the rows vary{hint}"
        )

    same = not pairing.eval_data.dataset.is_eval
    if same:
        eval_rows, eval_path = std_rows, std_path
    else:
        eval_rows, eval_path = _rows_of(pairing.eval_data.dataset, folder, pairing.where, max_row_bytes)
    count = min(len(std_rows), len(eval_rows))
    if len(std_rows) != len(eval_rows):
        notes.append(
            f"{pairing.where}: {eval_path.name} has {len(eval_rows)} rows, {std_path.name} "
            f"{len(std_rows)}: joined by line, the first {count} rows are used"
        )
    rows = [{**row, **constants} for row in std_rows[:count]]
    eval_columns = set().union(*eval_rows[:count])

    def column_for(column: str, key: str) -> str:
        """The name, in the written rows, of the evaluator dataset's `column`."""
        if column not in eval_columns:
            raise ExperimentImportError(
                f"{key}: column {column!r} is not in {eval_path} (columns: {', '.join(sorted(eval_columns))})"
            )
        if same:
            return column
        values = [row.get(column) for row in eval_rows[:count]]
        if column in columns and any(rows[i].get(column) != values[i] for i in range(count)):
            target = f"eval_{column}"
            notes.append(
                f"{key}: {eval_path.name}'s column {column} differs from {std_path.name}'s: it is the column {target}"
            )
        else:
            target = column
        for i, value in enumerate(values):
            rows[i][target] = value
        return target

    mapping: dict[str, str] = {}
    skipped_data: list[tuple[str, str]] = []
    for name, value in pairing.eval_data.mappings.items():
        key = f"{pairing.where}.mappings.{name}"
        scope, ref = parse_reference(value, key)
        if eval_facts.inputs and name not in eval_facts.inputs:
            notes.append(
                f"NOT MAPPED {key}: {eval_facts.file} has no input {name!r} (inputs: "
                f"{', '.join(eval_facts.inputs)}); prompt flow ignores it, and so does the import"
            )
            if scope == "data":
                skipped_data.append((ref, key))
            continue
        if scope == "data":
            mapping[name] = f"data.{column_for(ref, key)}"
        elif scope == "outputs":
            if facts.outputs is not None and ref not in facts.outputs:
                raise ExperimentImportError(
                    f"{key}: {value!r}: {facts.file} has no output {ref!r} (outputs: {', '.join(facts.outputs)})"
                )
            mapping[name] = f"outputs.{ref}"
        elif scope == "inputs":
            if ref not in inputs:
                raise ExperimentImportError(f"{key}: {value!r}: the flow input {ref!r} is not mapped")
            mapping[name] = f"data.{inputs[ref]}"
        else:
            for row in rows:
                row[f"const_{name}"] = value
            mapping[name] = f"data.const_{name}"
            notes.append(f"{key}: the literal {value!r} becomes the column const_{name} of every row")
    for name, (_, required) in eval_facts.inputs.items():
        if required and name not in mapping:
            key = f"{pairing.where}.mappings"
            if name not in eval_columns:
                raise ExperimentImportError(
                    f"{key}: {eval_facts.file} input {name!r} has no default, no mapping "
                    f"and no column of its name in {eval_path}"
                )
            mapping[name] = f"data.{column_for(name, key)}"
            notes.append(
                f"{key}: evaluation input {name} (no default, not mapped) reads the column {name}, as prompt flow does"
            )
    for name, (_, required) in eval_facts.inputs.items():
        if not required and name not in mapping:
            notes.append(f"evaluation input {name} is not mapped: every row is evaluated on its default")

    flow_columns = set(inputs.values())
    truth = [s.removeprefix("data.") for s in mapping.values() if s.startswith("data.")]
    truth = [c for c in truth if c not in flow_columns and not c.startswith("const_")]
    if truth:
        label = truth[0]
    elif skipped_data:
        column, key = skipped_data[0]
        label = column_for(column, key)
        notes.append(f"label: {label} (the column {key} maps, though the evaluation flow does not take it)")
    elif constants := [s.removeprefix("data.") for s in mapping.values() if s.startswith("data.const_")]:
        label = constants[0]
        notes.append(f"label: {label} (a literal value: the evaluator maps no data column besides the flow's inputs)")
    else:
        raise ExperimentImportError(
            f"{pairing.where}.mappings: no ${{data.<column>}} besides the flow's inputs: "
            "this project needs a ground-truth column (data.label)"
        )
    sources = std_path.name if same else f"{std_path.name} + {eval_path.name}"
    return Plan(rows, file_name, sources, inputs, mapping, label, pairing.evaluator.path, notes)


def choose_correct(eval_facts: flow_facts.FlowFacts, where: str) -> tuple[str | None, dict[str, str], str]:
    """The evaluation output that is a row's correctness, the headline metrics, and why: from declared types
    (`where` names the flow file in messages)."""
    outputs = dict(eval_facts.outputs or {})
    if not outputs:
        return (
            None,
            {},
            (
                f"{where} declares no outputs: no per-row correctness, no headline metric; set "
                "report.correct and metrics in the config"
            ),
        )
    typed = list(outputs.items())
    for wanted, describe in ((("bool",), "bool"), (_NUMBERS, "number")):
        for name, kind in typed:
            if kind in wanted:
                metric = "accuracy" if describe == "bool" else name
                return (
                    name,
                    {metric: name},
                    (f"correct: {name} ({where} declares it {kind}); headline metric {metric}: the mean of {name}"),
                )
    name, kind = typed[0]
    if kind == "string":
        return (
            name,
            {name: name},
            (
                f"correct: {name} ({where} declares only {', '.join(f'{n}: {k}' for n, k in typed)}); headline metric "
                f"{name}: the mean of {name} read by the documented mapping of stock grades "
                "(stages/metrics/headline.py: Correct/Incorrect, pass/fail, yes/no as 1/0, numbers as numbers; any "
                "other text counts as no value); otherwise set metrics in the config"
            ),
        )
    return (
        name,
        {"accuracy": name},
        (
            f"correct: {name} ({where} declares it {kind or 'untyped'}); headline metric accuracy: the mean of "
            f"{name} read by the documented mapping (stages/metrics/headline.py): an object by its first number (the "
            f"stock entity match's match_cnt: exact_match), a grade string as 1/0; to read another number, set "
            f"metrics: {{<name>: {name}.<key>}} (dotted paths) in the config"
        ),
    )


def _use_case_names(base: str, experiment_name: str, pairs: list[Pairing]) -> list[str]:
    names: list[str] = []
    for i, pairing in enumerate(pairs):
        if i == 0:
            candidate = base
        else:
            evaluator = slug(pairing.evaluator.name)
            for prefix in dict.fromkeys((base, experiment_name)):  # web_classification_flow_adv -> <base>_flow_adv
                evaluator = evaluator.removeprefix(f"{prefix}_")
            evaluator = f"{base}_{evaluator}"
            several = len(pairing.evaluator.datasets) > 1 and pairing.index > 0
            candidate = f"{evaluator}_{slug(pairing.eval_data.dataset.name)}" if several else evaluator
        while candidate in names:
            candidate += "_2"
        names.append(candidate)
    return names


def _env_pairing(
    base_pair: Pairing, env_pairs: list[Pairing], env_exp: exp.Experiment, file: str
) -> tuple[Pairing, str]:
    """The pairing an env runs for a base pairing, and how it was chosen."""
    for pair in env_pairs:
        if pair.evaluator.name == base_pair.evaluator.name and pair.index == base_pair.index:
            return pair, ""
    if any(e.name == base_pair.evaluator.name for e in env_exp.evaluators):
        return base_pair, f"{file}: evaluator '{base_pair.evaluator.name}' has no dataset {base_pair.index}: the base's"
    candidates = env_exp.datasets
    standard = (
        env_exp.dataset(base_pair.standard.dataset.name)
        or next((d for d in candidates if d.dataset.source == base_pair.standard.dataset.source), None)
        or (candidates[0] if len(candidates) == 1 else None)
    )
    if standard is None:
        return base_pair, f"{file}: no dataset for evaluator '{base_pair.evaluator.name}': runs the base's datasets"
    why = f"{file}: names no evaluator '{base_pair.evaluator.name}'"
    if standard.dataset.source == base_pair.standard.dataset.source:
        same = replace(base_pair, standard=replace(base_pair.standard, mappings=standard.mappings))
        return same, (
            f"{why}; its dataset '{standard.dataset.name}' is the base's file {standard.dataset.source}: "
            "the same rows, evaluated as in the base (the env's subset applies)"
        )
    own = exp.MappedDataset(standard.dataset, base_pair.eval_data.mappings)
    return replace(base_pair, standard=standard, eval_data=own), (
        f"{why}: its dataset '{standard.dataset.name}' ({standard.dataset.source}) runs, and the base "
        f"evaluator's mappings read its own columns"
    )


def _env_plans(
    pairing: Pairing,
    overlays: Mapping[str, exp.Experiment],
    folder: Path,
    facts: flow_facts.FlowFacts,
    max_row_bytes: int,
) -> dict[str, Plan]:
    """The plan of a base pairing in the base ("") and in each overlay's env."""
    chosen = {"": (pairing, "")}
    for env, overlay in overlays.items():
        env_file = _short(overlay.files[-1], folder)
        chosen[env] = _env_pairing(pairing, pairings(overlay, env_file)[0], overlay, env_file)
    by_env: dict[str, Plan] = {}
    for env, (env_pair, why) in chosen.items():
        dataset = env_pair.eval_data.dataset if env_pair.eval_data.dataset.is_eval else env_pair.standard.dataset
        env_plan = plan(env_pair, folder, facts, f"{slug(dataset.name)}.jsonl", max_row_bytes)
        if why:
            env_plan.notes.insert(0, why)
        if env and not why and _same_plan(env_plan, by_env[""]):
            env_plan.notes = []  # an overlay that changes nothing for this use case: nothing to say
        by_env[env] = env_plan
    _same_label(by_env, folder)
    return by_env


def _same_plan(one: Plan, other: Plan) -> bool:
    return (one.rows, one.inputs, one.mapping, one.eval_flow) == (
        other.rows,
        other.inputs,
        other.mapping,
        other.eval_flow,
    )


def _same_label(by_env: dict[str, Plan], folder: Path) -> None:
    """Every env's rows name the ground truth as the base's do (data.label is one key for every env)."""
    label = by_env[""].label
    for env, env_plan in by_env.items():
        if env_plan.label == label:
            continue
        if any(label in row for row in env_plan.rows):
            raise ExperimentImportError(
                f"experiment.{env}.yaml: the ground truth is {env_plan.label!r}, the base's "
                f"{label!r}, and its rows have a column {label!r} too"
            )
        for row in env_plan.rows:
            row[label] = row[env_plan.label]
        env_plan.mapping = {
            k: f"data.{label}" if v == f"data.{env_plan.label}" else v for k, v in env_plan.mapping.items()
        }
        env_plan.notes.append(f"the ground truth {env_plan.label} is written as the column {label}, as in the base")
        env_plan.label = label


def _variants(facts: flow_facts.FlowFacts) -> tuple[dict[str, Any], str]:
    """The use case's variants from the flow's own node variants, as the template runs them: v1 the defaults, then
    one variant per other node variant. No node variants: v1 and v2, both the flow as it is."""
    import yaml

    if facts.kind is not engine.FlowKind.DAG:
        return {}, ""
    declared = (yaml.safe_load(facts.file.read_text(encoding="utf-8")) or {}).get("node_variants") or {}
    others = [
        (node, variant)
        for node, spec in declared.items()
        for variant in (spec.get("variants") or {})
        if variant != spec.get("default_variant_id")
    ]
    if not others:
        return {}, ""
    names = tuple(f"v{i}" for i in range(1, len(others) + 2))
    selections = {name: {node: variant} for name, (node, variant) in zip(names[1:], others, strict=True)}
    shown = ", ".join(f"{name}: {node}={variant}" for name, sel in selections.items() for node, variant in sel.items())
    return (
        {"variants": names, "variant_node_variants": selections},
        f"variants: v1 the flow's default node variants, {shown} (the template's node variants)",
    )


def _requirements(flow: Path, shown: str) -> tuple[list[str], list[str]]:
    """The steps the flow's requirements file needs before the run stage accepts it (the exact pip command for what
    is not installed) and the notes on renamed packages, as the run stage checks them."""
    path = engine.requirements_file(flow)
    if path is None or not path.is_file():
        return [], []
    check = engine.check_requirements_file(path)
    file = f"{shown}/{path.relative_to(flow)}"
    steps = []
    if check.unmet:
        steps.append(
            f"{file}: not installed here: {'; '.join(check.unmet)}. The run stage refuses the flow until you run: "
            f"{check.pip_command(file)}"
        )
    return steps, [f"{file}, {note}" for note in check.notes]


def _project_envs(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "conf" / "env").glob("*.yaml"))


def _relative_in(path: Path, folder: Path, where: str) -> Path:
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise ExperimentImportError(f"{where}: {path} is outside the experiment folder {folder}") from None


def _validate(root: Path, spec: catalogue.UseCaseSpec, max_row_bytes: int) -> None:
    """The imported dataset of `spec` passes the prepare stage's checks (required strings, lists, label, unique
    inputs, the row size bound `prepare.max_row_bytes`), at import time; errors name it as the project does."""
    path = root / spec.dataset
    inputs = datasets.input_columns(spec.inputs if isinstance(spec.inputs, dict) else list(spec.inputs))
    try:
        schema = datasets.Schema(tuple(inputs.values()), spec.label, spec.lists)
        datasets.assign_ids(datasets.load(path, schema, max_row_bytes), schema, path)
    except datasets.DatasetError as exc:
        message = str(exc).replace(str(path), spec.dataset)
        raise ExperimentImportError(f"{message} (the prepare stage's checks, at import)") from None


def _use_case_spec(
    use_case: str,
    pairing: Pairing,
    by_env: dict[str, Plan],
    files: dict[str, str],
    flows: Mapping[Path, Path],
    facts: flow_facts.FlowFacts,
    overlays: Mapping[str, exp.Experiment],
    folder: Path,
    llm_node: str | None,
    relative: str,
) -> tuple[catalogue.UseCaseSpec, list[str]]:
    """The config of one use case (its files under `relative`, use_cases/<name>) and the notes on every choice."""
    base_plan = by_env[""]
    eval_facts = flow_facts.read(base_plan.eval_flow)
    correct, metrics, why = choose_correct(eval_facts, _short(str(eval_facts.file), folder))
    outputs = [s.removeprefix("outputs.") for s in base_plan.mapping.values() if s.startswith("outputs.")]
    prediction = outputs[0] if outputs else next(iter(facts.outputs or {"output": None}))
    notes = [
        f"{pairing.where}: runs the standard flow on '{pairing.standard.dataset.name}', evaluated by "
        f"'{pairing.evaluator.name}' ({_short(str(base_plan.eval_flow), folder)}) on "
        f"'{pairing.eval_data.dataset.name}': data/{files['']} ({_rows(len(base_plan.rows))}, {base_plan.sources})",
        why,
    ]
    if not outputs:
        notes.append(f"prediction: {prediction} (the evaluator maps no run output; the flow's first output)")
    for env, env_plan in by_env.items():
        notes += [f"[{env}] {n}" if env else n for n in env_plan.notes if not env or n not in base_plan.notes]
    judges: tuple[str, ...] = eval_facts.llm_nodes
    if eval_facts.kind is engine.FlowKind.FLEX and eval_facts.model_config:
        judges = ("model_config",)
    if judges:
        notes.append(
            f"evaluate.judges: {', '.join(judges)}: the evaluation flow's LLM is the judge LLM "
            "(conf/config.yaml llm@judge)"
        )
    per_env: dict[str, dict[str, object]] = {}
    for env, env_plan in by_env.items():
        changes: dict[str, object] = {}
        if env and env_plan.eval_flow != base_plan.eval_flow:
            changes["eval_flow"] = f"{relative}/{flows[env_plan.eval_flow]}"
        if env and env_plan.inputs != base_plan.inputs:
            changes["inputs"] = dict(env_plan.inputs)
        if env and env_plan.mapping != base_plan.mapping:
            changes["mapping"] = dict(env_plan.mapping)
        if changes:
            per_env[env] = changes
            shown = ", ".join(f"{key} {value}" for key, value in changes.items())
            notes.append(f"[{env}] {_short(overlays[env].files[-1], folder)}: {shown} in env {env}")
    spec = catalogue.UseCaseSpec(
        name=use_case,
        dataset=f"{relative}/data/{files['']}",
        flow=f"{relative}/{flows[facts.path]}",
        eval_flow=f"{relative}/{flows[base_plan.eval_flow]}",
        inputs=dict(base_plan.inputs),
        label=base_plan.label,
        mapping=dict(base_plan.mapping),
        prediction=prediction,
        correct=correct or "correct",
        metrics=metrics,
        llm_node=llm_node,
        judges=judges,
        datasets_by_env={env: f"{relative}/data/{f}" for env, f in files.items() if env and f != files[""]} or None,
        by_env=per_env or None,
    )
    return spec, notes


def import_experiment(
    root: Path,
    folder: Path,
    name: str | None = None,
    llm_node: str | None = None,
    filename: str = exp.EXPERIMENT_FILE,
    compose: Callable[[], None] | None = None,
) -> ImportResult:
    """Import the experiment in `folder` as use cases named `name`, `name_<evaluator>`...; `compose` (params.yaml)
    runs inside the transaction. Raises ExperimentImportError (the project unchanged) when anything fails."""
    try:
        base = exp.load(folder, None, filename)
        overlays = {env: exp.load(folder, env, filename) for env in exp.envs(folder, filename)}
    except exp.ExperimentError as exc:
        raise ExperimentImportError(str(exc)) from None
    base_file = filename
    name = name or slug(base.name)
    try:
        catalogue.check_name(name)
    except catalogue.CatalogueError as exc:
        raise ExperimentImportError(f"{base_file}: name '{base.name}' -> {exc}; pass a name with --name") from None
    result = ImportResult(folder=f"use_cases/{name}")
    target = root / "use_cases" / name
    if target.exists():
        raise ExperimentImportError(f"{target} exists already (choose another --name)")

    try:
        facts = flow_facts.read(exp.flow_dir(folder, base.flow))
    except engine.FlowError as exc:
        raise ExperimentImportError(f"{base_file}: flow: {exc}") from None
    if llm_node and llm_node not in facts.llm_nodes:  # before anything is copied, naming the template's file
        raise ExperimentImportError(
            f"--llm-node {llm_node}: {_short(str(facts.file), folder)} has no `type: llm` node {llm_node!r} "
            f"(its LLM nodes: {', '.join(facts.llm_nodes) or 'none'})"
        )
    if facts.kind is engine.FlowKind.PROMPTY:
        raise ExperimentImportError(
            f"{base_file}: flow: {facts.path} is a .prompty file; the template runs flow "
            "folders (flow.dag.yaml or flow.flex.yaml)"
        )
    base_pairs, unpaired = pairings(base, base_file)
    result.not_mapped += unpaired
    if not base.evaluators:
        raise ExperimentImportError(
            f"{base_file}: evaluators: none, and a use case of this project is evaluated. Add one to "
            f"experiment.yaml (evaluators: [{{name: ..., flow: flows/<evaluation flow>, datasets: [{{name: "
            f"{base.datasets[0].dataset.name}, mappings: {{<eval input>: '${{data.<column>}}', <eval input>: "
            "'${run.outputs.<output>}'}}]}]) and import again, or import the flow with `llmops add-use-case "
            "--eval-flow ...`"
        )
    evaluated = {p.standard.dataset.name for p in base_pairs}
    for mapped in base.datasets:
        if mapped.dataset.name not in evaluated:
            result.not_mapped.append(
                f"{base_file}: dataset '{mapped.dataset.name}' is evaluated by no evaluator "
                "(the template runs it without evaluation): add an evaluator dataset that "
                "references it, or import it with `llmops add-use-case`"
            )

    runnable: list[Pairing] = []
    plans: list[dict[str, Plan]] = []
    max_row_bytes = load_params(root)["prepare"]["max_row_bytes"]
    for pairing in base_pairs:
        try:
            plans.append(_env_plans(pairing, overlays, folder, facts, max_row_bytes))
        except _NotMappable as exc:
            result.not_mapped.append(str(exc))
            continue
        runnable.append(pairing)
    if not runnable:
        raise ExperimentImportError(
            f"{base_file}: no evaluator dataset can be imported:\n  " + "\n  ".join(result.not_mapped)
        )

    names = _use_case_names(name, slug(base.name), runnable)
    for use_case in names:
        catalogue.check_name(use_case)
        if (root / "conf" / "use_cases" / f"{use_case}.yaml").exists():
            raise ExperimentImportError(f"conf/use_cases/{use_case}.yaml exists already (choose another --name)")

    # Files: each env's rows under data/ (one file per distinct content), flows at their path in the folder.
    file_names: dict[str, str] = {}  # file name -> content

    def file_for(env_plan: Plan) -> str:
        content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in env_plan.rows)
        stem, candidate, n = env_plan.file_name.removesuffix(".jsonl"), env_plan.file_name, 1
        while candidate in file_names and file_names[candidate] != content:
            n += 1
            candidate = f"{stem}_{n}.jsonl"
        file_names[candidate] = content
        return candidate

    flows = {facts.path: _relative_in(facts.path, folder, f"{base_file}: flow")}
    variant_plan, variant_note = _variants(facts)
    specs: list[catalogue.UseCaseSpec] = []
    for use_case, pairing, by_env in zip(names, runnable, plans, strict=True):
        files = {env: file_for(env_plan) for env, env_plan in by_env.items()}
        for env_plan in by_env.values():
            flows.setdefault(env_plan.eval_flow, _relative_in(env_plan.eval_flow, folder, pairing.evaluator.where))
        spec, notes = _use_case_spec(
            use_case, pairing, by_env, files, flows, facts, overlays, folder, llm_node, result.folder
        )
        specs.append(
            replace(
                spec, origin=f"imported by `llmops import-experiment` from {folder.name}/{filename}", **variant_plan
            )
        )
        result.choices[use_case] = ([variant_note] if variant_note else []) + notes
    for env in sorted(set(overlays) - set(_project_envs(root))):
        result.next_steps.append(
            f"experiment.{env}.yaml: this project has no conf/env/{env}.yaml: copy "
            f"conf/env/dev.yaml to it to run that env (`llmops params env={env}`)"
        )

    for connection in base.connections:
        result.not_mapped.append(
            f"{base_file}: connection '{connection.get('name')}' ({connection.get('connection_type')}): the flows "
            "run on this project's LLM (conf/llm, -S llm=...; for Azure OpenAI set AZURE_OPENAI_ENDPOINT / "
            "AZURE_OPENAI_API_KEY in .env); its settings and secrets are not copied"
        )
    if base.runtime is not None or any(o.runtime for o in overlays.values()):
        result.not_mapped.append(f"{base_file}: runtime (an Azure ML runtime; the flows run where the run stage runs)")
    for flow, relative in flows.items():
        steps, notes = _requirements(flow, f"{result.folder}/{relative}")
        result.next_steps += steps
        result.notes += notes
    # notes name the template's files relative to its folder, as the user sees them there
    result.not_mapped = [_short(n, folder) for n in result.not_mapped]
    result.choices = {uc: [_short(n, folder) for n in notes] for uc, notes in result.choices.items()}
    return _commit(root, folder, target, flows, file_names, specs, result, compose, max_row_bytes)


def _commit(
    root: Path,
    folder: Path,
    target: Path,
    flows: Mapping[Path, Path],
    files: Mapping[str, str],
    specs: list[catalogue.UseCaseSpec],
    result: ImportResult,
    compose: Callable[[], None] | None,
    max_row_bytes: int,
) -> ImportResult:
    """Build the use case folder aside, check every spec against it, then move it into place and write the configs;
    any failure removes what was written and restores conf/config.yaml."""
    config_file = root / "conf" / "config.yaml"
    config_text = config_file.read_text(encoding="utf-8")
    written: list[Path] = []
    staged = False
    staging = Path(tempfile.mkdtemp(prefix=f".import-{target.name}-", dir=target.parent))
    try:
        for source, relative in flows.items():
            shutil.copytree(source, staging / relative, ignore=shutil.ignore_patterns(".promptflow", "__pycache__"))
            result.copied.append(f"{result.folder}/{relative}")
        for file_name, content in files.items():
            write_text(staging / "data" / file_name, content)
            result.copied.append(f"{result.folder}/data/{file_name}")
        staging.rename(target)
        checked = []
        for spec in specs:
            try:
                spec, check_notes = catalogue.check(root, spec, _where(spec.name))
            except catalogue.CatalogueError as exc:
                raise ExperimentImportError(str(exc)) from None
            result.choices[spec.name] += check_notes
            _validate(root, spec, max_row_bytes)
            checked.append(spec)
        for spec in checked:
            written.append(catalogue.write(root, spec))
            result.use_cases.append((spec.name, written[-1]))
        if compose:
            compose()
        staged = True
        catalogue.dvc_add(root, *(str((target / "data" / f).relative_to(root)) for f in files))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if staged:
            subprocess.run(["git", "reset", "-q", "--", str(target.relative_to(root))], cwd=root, check=False)
        shutil.rmtree(target, ignore_errors=True)
        for path in written:
            path.unlink(missing_ok=True)
        write_text(config_file, config_text)
        raise
    return result


def _where(name: str) -> dict[str, str]:
    return {
        "llm_node": "--llm-node",
        "inputs": f"use case {name}: data.inputs",
        "label": f"use case {name}: data.label",
        "mapping": f"use case {name}: evaluate.mapping",
        "correct": f"use case {name}: report.correct",
        "prediction": f"use case {name}: report.prediction",
    }
