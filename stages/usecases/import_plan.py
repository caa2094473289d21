"""What an imported experiment's datasets become: each evaluator dataset paired with the standard dataset it
evaluates, its mappings read by prompt flow's rules into a use case's inputs, label and evaluation mapping
(`plan`); an experiment without evaluators gets the built-in operational evaluation (`operational_evaluator`). The
evaluation output that tells a row correct is chosen in eval_outputs.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages import engine
from stages.data import datasets
from stages.usecases import experiment as exp
from stages.usecases import flow_facts

_REFERENCE = re.compile(r"^\$\{([^}]*)\}$")
# The evaluation of an experiment that names no evaluators: shipped with the toolkit, used where it is (not copied).
OPERATIONAL_EVAL = Path(__file__).resolve().parents[1] / "templates" / "operational"
OPERATIONAL_EVAL_AT = "stages/templates/operational"  # the same folder, as the use case's config names it


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


class NotMappable(Exception):
    """A pairing this project cannot run (an Azure ML data asset, an evaluator that is no flow)."""


def rows_text(count: int) -> str:
    return f"{count} row{'s' * (count != 1)}"


def slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def short(text: str, folder: Path) -> str:
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


def operational_evaluator(experiment: exp.Experiment, facts: flow_facts.FlowFacts, file: str) -> exp.Evaluator:
    """The evaluator of an experiment that names none: the built-in operational evaluation (is there an answer?) of
    the flow's first output, on every standard dataset."""
    output = next(iter(facts.outputs or {"output": None}))
    mappings = {"prediction": f"${{run.outputs.{output}}}"}
    datasets = tuple(exp.MappedDataset(d.dataset, mappings) for d in experiment.datasets)
    return exp.Evaluator("operational", datasets, OPERATIONAL_EVAL, f"{file}: evaluators (none)")


def _operational_label(rows: list[dict[str, Any]], flow_columns: set[str]) -> str:
    """The column shown as a row's expected value when nothing is evaluated against one: the first column no flow
    input reads that every row fills, else the first input's column."""
    for column in rows[0]:
        if column not in flow_columns and all(row.get(column) not in (None, "", []) for row in rows):
            return column
    return next(column for column in rows[0] if column in flow_columns)


def _rows_of(dataset: exp.Dataset, folder: Path, where: str, max_row_bytes: int) -> tuple[list[dict[str, Any]], Path]:
    if dataset.is_remote:
        raise NotMappable(
            f"{where}: dataset '{dataset.name}' is an Azure ML data asset ({dataset.source}): download it into "
            f"{folder}/data/, point `source` at the file and import again"
        )
    path = dataset.local_source(folder)
    assert path is not None
    return _read_rows(path, f"{where} ('{dataset.name}')", max_row_bytes), path


def _flow_inputs(
    pairing: Pairing, facts: flow_facts.FlowFacts, std_rows: list[dict[str, Any]], std_path: Path, folder: Path,
    notes: list[str],
) -> tuple[dict[str, str], dict[str, Any]]:  # fmt: skip
    """The flow's inputs as columns of the standard rows (flow input -> column), and the constant columns that
    literal mappings add, by prompt flow's rules (`notes` gets what was decided)."""
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
    if facts.inputs and not inputs:  # prompt flow would run every row on the same defaults: nothing to compare
        inputs.update(_inputs_by_name(pairing, facts, columns, std_key, folder, notes))
    for flow_input, (kind, required) in facts.inputs.items():  # after the inputs read by name: said once, and true
        if not required and flow_input not in inputs:
            why = (
                f" (the rows' column {flow_input} is an object, and the run stage passes no object to a flow yet: "
                "docs/onboarding.md, List and dict inputs)"
                if kind == "object" and flow_input in columns
                else ""
            )
            notes.append(f"flow input {flow_input} is not mapped: every row runs on its default{why}")
    return inputs, constants


def _inputs_by_name(
    pairing: Pairing, facts: flow_facts.FlowFacts, columns: set[str], std_key: str, folder: Path, notes: list[str]
) -> dict[str, str]:
    """An experiment that maps no input of its flow: the inputs the rows have a same-named column for read it (with
    a warning: prompt flow would run every row on the flow's defaults); refused when there is no such column."""
    by_name = {name: name for name, (kind, _) in facts.inputs.items() if name in columns and kind != "object"}
    if not by_name:
        raise ExperimentImportError(
            f"{std_key}: maps no input of {short(str(facts.file), folder)} (inputs: {', '.join(facts.inputs)}), "
            "and each has a default, so every row would run on the defaults, as prompt flow runs it, and the rows "
            "have no column named as an input: map the inputs the rows vary"
        )
    shown = ", ".join(f"{name}: '${{data.{name}}}'" for name in by_name)
    notes.append(
        f"warning: {std_key}: maps no input of {short(str(facts.file), folder)} (inputs: "
        f"{', '.join(facts.inputs)}); prompt flow would run every row on the flow's defaults. The inputs the rows "
        f"have a column of the same name for read it, unlike prompt flow ({shown}); write these mappings in "
        f"{pairing.standard_where.partition(':')[0] or 'experiment.yaml'} to say so"
    )
    return by_name


@dataclass
class _Joined:
    """The written rows (the standard rows joined by line with the evaluator dataset's rows), and the columns of
    the evaluator dataset added to them as the evaluation mapping reads them."""

    rows: list[dict[str, Any]]
    std_columns: set[str]
    std_path: Path
    eval_rows: list[dict[str, Any]]
    eval_path: Path
    same: bool  # the evaluator reads the standard dataset itself
    notes: list[str]

    @property
    def eval_columns(self) -> set[str]:
        return set().union(*self.eval_rows[: len(self.rows)])

    def column_for(self, column: str, key: str) -> str:
        """The name, in the written rows, of the evaluator dataset's `column`."""
        count = len(self.rows)
        if column not in self.eval_columns:
            raise ExperimentImportError(
                f"{key}: column {column!r} is not in {self.eval_path} (columns: {', '.join(sorted(self.eval_columns))})"
            )
        if self.same:
            return column
        values = [row.get(column) for row in self.eval_rows[:count]]
        if column in self.std_columns and any(self.rows[i].get(column) != values[i] for i in range(count)):
            target = f"eval_{column}"
            self.notes.append(
                f"{key}: {self.eval_path.name}'s column {column} differs from {self.std_path.name}'s: it is the "
                f"column {target}"
            )
        else:
            target = column
        for i, value in enumerate(values):
            self.rows[i][target] = value
        return target


def _eval_mapping(
    pairing: Pairing, facts: flow_facts.FlowFacts, eval_facts: flow_facts.FlowFacts, inputs: dict[str, str],
    joined: _Joined,
) -> tuple[dict[str, str], list[tuple[str, str]]]:  # fmt: skip
    """The evaluation flow's inputs as data.<column> or outputs.<name>, by prompt flow's rules; and the data
    columns mapped to inputs the evaluation flow lacks (a label candidate)."""
    notes = joined.notes
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
            mapping[name] = f"data.{joined.column_for(ref, key)}"
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
            for row in joined.rows:
                row[f"const_{name}"] = value
            mapping[name] = f"data.const_{name}"
            notes.append(f"{key}: the literal {value!r} becomes the column const_{name} of every row")
    for name, (_, required) in eval_facts.inputs.items():
        if required and name not in mapping:
            key = f"{pairing.where}.mappings"
            if name not in joined.eval_columns:
                raise ExperimentImportError(
                    f"{key}: {eval_facts.file} input {name!r} has no default, no mapping "
                    f"and no column of its name in {joined.eval_path}"
                )
            mapping[name] = f"data.{joined.column_for(name, key)}"
            notes.append(
                f"{key}: evaluation input {name} (no default, not mapped) reads the column {name}, as prompt flow does"
            )
    for name, (_, required) in eval_facts.inputs.items():
        if not required and name not in mapping:
            notes.append(f"evaluation input {name} is not mapped: every row is evaluated on its default")
    return mapping, skipped_data


def _label(
    pairing: Pairing, inputs: dict[str, str], mapping: dict[str, str], skipped_data: list[tuple[str, str]],
    joined: _Joined,
) -> str:  # fmt: skip
    """The ground-truth column: a data column the evaluation maps besides the flow's inputs."""
    flow_columns = set(inputs.values())
    truth = [s.removeprefix("data.") for s in mapping.values() if s.startswith("data.")]
    truth = [c for c in truth if c not in flow_columns and not c.startswith("const_")]
    if truth:
        return truth[0]
    if skipped_data:
        column, key = skipped_data[0]
        label = joined.column_for(column, key)
        joined.notes.append(f"label: {label} (the column {key} maps, though the evaluation flow does not take it)")
        return label
    if constants := [s.removeprefix("data.") for s in mapping.values() if s.startswith("data.const_")]:
        joined.notes.append(
            f"label: {constants[0]} (a literal value: the evaluator maps no data column besides the flow's inputs)"
        )
        return constants[0]
    if pairing.evaluator.path == OPERATIONAL_EVAL:
        label = _operational_label(joined.rows, flow_columns)
        joined.notes.append(
            f"label: {label} (shown as the expected value in the report; the operational evaluation reads no ground "
            "truth)"
        )
        return label
    raise ExperimentImportError(
        f"{pairing.where}.mappings: no ${{data.<column>}} besides the flow's inputs: "
        "this project needs a ground-truth column (data.label)"
    )


def plan(pairing: Pairing, folder: Path, facts: flow_facts.FlowFacts, file_name: str, max_row_bytes: int) -> Plan:
    """The rows and mappings of one pairing: the standard rows with the evaluator dataset's columns joined by line
    (and literal values as constant columns), the flow's inputs and the evaluation's mapping as this project
    names them. Follows prompt flow: a mapping to no input of the flow is ignored, an input without default
    and without mapping reads the column of its name."""
    try:
        eval_facts = flow_facts.read(pairing.evaluator.path)
    except engine.FlowError as exc:
        raise NotMappable(
            f"{pairing.evaluator.where}: evaluator '{pairing.evaluator.name}': {exc}; the template cannot run it either"
        ) from None
    standard_where = pairing.standard.dataset.name
    std_rows, std_path = _rows_of(pairing.standard.dataset, folder, f"dataset '{standard_where}'", max_row_bytes)
    notes: list[str] = []
    inputs, constants = _flow_inputs(pairing, facts, std_rows, std_path, folder, notes)
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
    joined = _Joined(rows, set().union(*std_rows), std_path, eval_rows, eval_path, same, notes)
    mapping, skipped_data = _eval_mapping(pairing, facts, eval_facts, inputs, joined)
    label = _label(pairing, inputs, mapping, skipped_data, joined)
    sources = std_path.name if same else f"{std_path.name} + {eval_path.name}"
    return Plan(rows, file_name, sources, inputs, mapping, label, pairing.evaluator.path, notes)
