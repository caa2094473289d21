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
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from stages import engine
from stages.core.io import write_text
from stages.core.project import load_params
from stages.usecases import catalogue, flow_facts
from stages.usecases import experiment as exp
from stages.usecases.import_plan import (
    OPERATIONAL_EVAL,
    OPERATIONAL_EVAL_AT,
    ExperimentImportError,
    ImportResult,
    NotMappable,
    Pairing,
    Plan,
    operational_evaluator,
    pairings,
    plan,
    short,
    slug,
)
from stages.usecases.import_spec import project_envs, relative_in, requirements, use_case_spec, validate, variants_of


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
        env_file = short(overlay.files[-1], folder)
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


def _template_flow(base: exp.Experiment, folder: Path, base_file: str, llm_node: str | None) -> flow_facts.FlowFacts:
    """The facts of the experiment's flow, checked before anything is copied (naming the template's file)."""
    try:
        facts = flow_facts.read(exp.flow_dir(folder, base.flow))
    except engine.FlowError as exc:
        raise ExperimentImportError(f"{base_file}: flow: {exc}") from None
    if llm_node and llm_node not in facts.llm_nodes:
        raise ExperimentImportError(
            f"--llm-node {llm_node}: {short(str(facts.file), folder)} has no `type: llm` node {llm_node!r} "
            f"(its LLM nodes: {', '.join(facts.llm_nodes) or 'none'})"
        )
    if facts.kind is engine.FlowKind.PROMPTY:
        raise ExperimentImportError(
            f"{base_file}: flow: {facts.path} is a .prompty file; the template runs flow "
            "folders (flow.dag.yaml or flow.flex.yaml)"
        )
    return facts


def _evaluated_pairings(
    base: exp.Experiment, overlays: Mapping[str, exp.Experiment], facts: flow_facts.FlowFacts, base_file: str,
    folder: Path, result: ImportResult,
) -> tuple[list[Pairing], bool]:  # fmt: skip
    """The experiment's (evaluator, dataset) pairings, and whether they are the built-in operational evaluation's (an
    experiment without evaluators); `result.not_mapped` gets the datasets nothing evaluates."""
    operational = not base.evaluators  # the output says how to add an evaluator
    if operational:
        base.evaluators = [operational_evaluator(base, facts, base_file)]
        for overlay in overlays.values():
            if not overlay.evaluators:
                overlay.evaluators = [operational_evaluator(overlay, facts, short(overlay.files[-1], folder))]
    base_pairs, unpaired = pairings(base, base_file)
    result.not_mapped += unpaired
    evaluated = {p.standard.dataset.name for p in base_pairs}
    for mapped in base.datasets:
        if mapped.dataset.name not in evaluated:
            result.not_mapped.append(
                f"{base_file}: dataset '{mapped.dataset.name}' is evaluated by no evaluator "
                "(the template runs it without evaluation): add an evaluator dataset that "
                "references it, or import it with `llmops add-use-case`"
            )
    return base_pairs, operational


def _add_an_evaluator(base_file: str, names: list[str], folder: str) -> str:
    """What to do to evaluate use cases imported without an evaluator, exactly."""
    uc = names[0]
    return (
        f"{base_file}: evaluators: none, so {', '.join(names)} {'is' if len(names) == 1 else 'are'} evaluated "
        f"operationally only ({OPERATIONAL_EVAL_AT}: answered, the share of rows with a non-empty answer; the run's "
        "latency, tokens, cost and errors as for every use case). To add an evaluator: copy your evaluation flow to "
        f"{folder}/flows/<evaluation flow>, then in conf/use_cases/{uc}.yaml set eval_flow: "
        f"{folder}/flows/<evaluation flow>, evaluate.mapping: {{<evaluation input>: data.<column> or "
        "outputs.<flow output>, ...}, data.label: <the ground-truth column>, report.correct: <the evaluation "
        "output that marks a row correct> and metrics: {accuracy: <that output>}; then `llmops params` and "
        f"`dvc repro report@{uc}`. Or add `evaluators:` to {base_file} (evaluators: [{{name: <name>, flow: "
        "flows/<evaluation flow>, datasets: [{name: <dataset>, mappings: {<evaluation input>: '${data.<column>}', "
        f"<evaluation input>: '${{run.outputs.<output>}}'}}}}]}}]), remove {folder}/, "
        f"conf/use_cases/{uc}.yaml and {uc} in conf/config.yaml's use_cases list, and import again"
    )


class _DataFiles(dict[str, str]):
    """Each env's rows under data/: file name -> content, one file per distinct content."""

    def file_for(self, env_plan: Plan) -> str:
        content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in env_plan.rows)
        stem, candidate, n = env_plan.file_name.removesuffix(".jsonl"), env_plan.file_name, 1
        while candidate in self and self[candidate] != content:
            n += 1
            candidate = f"{stem}_{n}.jsonl"
        self[candidate] = content
        return candidate


def _specs(
    names: list[str], runnable: list[Pairing], plans: list[dict[str, Plan]], files: _DataFiles,
    flows: dict[Path, Path], facts: flow_facts.FlowFacts, overlays: Mapping[str, exp.Experiment], folder: Path,
    llm_node: str | None, origin: str, result: ImportResult,
) -> list[catalogue.UseCaseSpec]:  # fmt: skip
    """Each use case's spec (`files` and `flows` gather the rows and flows to copy), its choices in `result`."""
    variant_plan, variant_note = variants_of(facts)
    specs: list[catalogue.UseCaseSpec] = []
    for use_case, pairing, by_env in zip(names, runnable, plans, strict=True):
        env_files = {env: files.file_for(env_plan) for env, env_plan in by_env.items()}
        for env_plan in by_env.values():
            if env_plan.eval_flow != OPERATIONAL_EVAL:  # the built-in evaluation is used where it is
                flows.setdefault(env_plan.eval_flow, relative_in(env_plan.eval_flow, folder, pairing.evaluator.where))
        located = {flow: f"{result.folder}/{relative}" for flow, relative in flows.items()}
        located[OPERATIONAL_EVAL] = OPERATIONAL_EVAL_AT
        spec, notes = use_case_spec(
            use_case, pairing, by_env, env_files, located, facts, overlays, folder, llm_node, result.folder
        )
        specs.append(replace(spec, origin=origin, **variant_plan))
        result.choices[use_case] = ([variant_note] if variant_note else []) + notes
    return specs


def _project_notes(
    root: Path, base: exp.Experiment, base_file: str, overlays: Mapping[str, exp.Experiment],
    flows: Mapping[Path, Path], result: ImportResult,
) -> None:  # fmt: skip
    """What the import does not bring over (connections, runtime) and the steps left (envs, requirements)."""
    for env in sorted(set(overlays) - set(project_envs(root))):
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
        steps, notes = requirements(flow, f"{result.folder}/{relative}")
        result.next_steps += steps
        result.notes += notes


def _new_names(root: Path, name: str, base: str, runnable: list[Pairing]) -> list[str]:
    """The imported use cases' names, checked: valid, and no config of that name yet."""
    names = _use_case_names(name, base, runnable)
    for use_case in names:
        catalogue.check_name(use_case)
        if (root / "conf" / "use_cases" / f"{use_case}.yaml").exists():
            raise ExperimentImportError(f"conf/use_cases/{use_case}.yaml exists already (choose another --name)")
    return names


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
    facts = _template_flow(base, folder, base_file, llm_node)
    runnable: list[Pairing] = []
    plans: list[dict[str, Plan]] = []
    base_pairs, operational = _evaluated_pairings(base, overlays, facts, base_file, folder, result)
    max_row_bytes = load_params(root)["prepare"]["max_row_bytes"]
    for pairing in base_pairs:
        try:
            plans.append(_env_plans(pairing, overlays, folder, facts, max_row_bytes))
        except NotMappable as exc:
            result.not_mapped.append(str(exc))
            continue
        runnable.append(pairing)
    if not runnable:
        raise ExperimentImportError(
            f"{base_file}: no evaluator dataset can be imported:\n  " + "\n  ".join(result.not_mapped)
        )
    names = _new_names(root, name, slug(base.name), runnable)
    if operational:
        result.next_steps.append(_add_an_evaluator(base_file, names, result.folder))
    files = _DataFiles()  # flows at their path in the folder
    flows = {facts.path: relative_in(facts.path, folder, f"{base_file}: flow")}
    origin = f"imported by `llmops import-experiment` from {folder.name}/{filename}"
    specs = _specs(names, runnable, plans, files, flows, facts, overlays, folder, llm_node, origin, result)
    _project_notes(root, base, base_file, overlays, flows, result)
    # notes name the template's files relative to its folder, as the user sees them there
    result.not_mapped = [short(n, folder) for n in result.not_mapped]
    result.choices = {uc: [short(n, folder) for n in notes] for uc, notes in result.choices.items()}
    return _commit(root, folder, target, flows, files, specs, result, compose, max_row_bytes)


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
            validate(root, spec, max_row_bytes)
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
