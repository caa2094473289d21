"""The parts of an imported use case's config: its variants (a DAG's LLM node and prompt), the flow's
requirements, the project's envs, and the catalogue spec checked before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages import engine
from stages.core.yaml_reader import load_yaml
from stages.data import datasets
from stages.usecases import catalogue, flow_facts
from stages.usecases import experiment as exp
from stages.usecases.eval_outputs import choose_correct
from stages.usecases.import_plan import (
    OPERATIONAL_EVAL,
    OPERATIONAL_EVAL_AT,
    ExperimentImportError,
    Pairing,
    Plan,
    rows_text,
    short,
)


def variants_of(facts: flow_facts.FlowFacts) -> tuple[dict[str, Any], str]:
    """The use case's variants from the flow's own node variants, as the template runs them: v1 the defaults, then
    one variant per other node variant. No node variants: v1 and v2, both the flow as it is."""
    if facts.kind is not engine.FlowKind.DAG:
        return {}, ""
    declared = (load_yaml(facts.file.read_text(encoding="utf-8")) or {}).get("node_variants") or {}
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


def requirements(flow: Path, shown: str) -> tuple[list[str], list[str]]:
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


def project_envs(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "conf" / "env").glob("*.yaml"))


def relative_in(path: Path, folder: Path, where: str) -> Path:
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise ExperimentImportError(f"{where}: {path} is outside the experiment folder {folder}") from None


def validate(root: Path, spec: catalogue.UseCaseSpec, max_row_bytes: int) -> None:
    """The imported dataset of `spec` passes the prepare stage's checks (required strings, lists, label, unique
    inputs, the row size bound `prepare.max_row_bytes`), at import time; errors name it as the project does."""
    path = root / spec.dataset
    inputs = spec.inputs if isinstance(spec.inputs, dict) else list(spec.inputs)
    every_env = [changes["inputs"] for changes in (spec.by_env or {}).values() if "inputs" in changes]
    try:
        schema = datasets.Schema.for_env(inputs, spec.label, spec.lists, every_env)  # type: ignore[arg-type]
        datasets.assign_ids(datasets.load(path, schema, max_row_bytes), schema, path)
    except datasets.DatasetError as exc:
        message = str(exc).replace(str(path), spec.dataset)
        raise ExperimentImportError(f"{message} (the prepare stage's checks, at import)") from None


def _per_env(
    by_env: dict[str, Plan], located: Mapping[Path, str], overlays: Mapping[str, exp.Experiment], folder: Path,
    notes: list[str],
) -> dict[str, dict[str, object]]:  # fmt: skip
    """What each env changes from the base plan (evaluation flow, inputs, mapping), each change noted."""
    base_plan = by_env[""]
    per_env: dict[str, dict[str, object]] = {}
    for env, env_plan in by_env.items():
        changes: dict[str, object] = {}
        if env and env_plan.eval_flow != base_plan.eval_flow:
            changes["eval_flow"] = located[env_plan.eval_flow]
        if env and env_plan.inputs != base_plan.inputs:
            changes["inputs"] = dict(env_plan.inputs)
        if env and env_plan.mapping != base_plan.mapping:
            changes["mapping"] = dict(env_plan.mapping)
        if changes:
            per_env[env] = changes
            shown = ", ".join(f"{key} {value}" for key, value in changes.items())
            notes.append(f"[{env}] {short(overlays[env].files[-1], folder)}: {shown} in env {env}")
    return per_env


def _evaluation_choice(
    pairing: Pairing, base_plan: Plan, eval_facts: flow_facts.FlowFacts, folder: Path
) -> tuple[str | None, dict[str, str], str, str, str]:
    """correct, metrics, why, who evaluates, and where the pairing is: the built-in operational evaluation's when the
    experiment has no evaluator."""
    if base_plan.eval_flow == OPERATIONAL_EVAL:
        why = (f"{pairing.evaluator.where}: evaluated by the built-in operational evaluation "
               f"({OPERATIONAL_EVAL_AT}): correct: answered (a non-empty answer); headline metric answered: the share "
               "of rows answered")  # fmt: skip
        evaluated_by = f"no evaluator ({OPERATIONAL_EVAL_AT})"
        return "answered", {"answered": "answered"}, why, evaluated_by, pairing.standard_where
    correct, metrics, why = choose_correct(eval_facts, short(str(eval_facts.file), folder))
    evaluated_by = (f"'{pairing.evaluator.name}' ({short(str(base_plan.eval_flow), folder)}) on "
                    f"'{pairing.eval_data.dataset.name}'")  # fmt: skip
    return correct, metrics, why, evaluated_by, pairing.where


def _json_answers(asks: bool, facts: flow_facts.FlowFacts, shown: str, key: str, whose: str, notes: list[str]) -> bool:
    """Whether a flow's LLM requests ask for JSON (`key`): the flow `asks` an LLM and its code parses an answer with
    json.loads. The one rule for the standard flow (`variants.<v>.json_answers`) and the judges
    (`evaluate.json_answers`); the proxy's RequestAdapter asks."""
    if not (asks and facts.json_parsers):
        return False
    notes.append(f"{key}: true ({', '.join(facts.json_parsers)} of {shown} parse(s) an answer with json.loads): "
                 f"{whose} requests ask for a JSON object (response_format on the chat API; a JSON grammar on "
                 "llama.cpp's completion API, conf/llm/local.yaml json_grammar), so a model that does not follow the "
                 "prompt's format still answers JSON")  # fmt: skip
    return True


def use_case_spec(
    use_case: str,
    pairing: Pairing,
    by_env: dict[str, Plan],
    files: dict[str, str],
    located: Mapping[Path, str],
    facts: flow_facts.FlowFacts,
    overlays: Mapping[str, exp.Experiment],
    folder: Path,
    llm_node: str | None,
    relative: str,
) -> tuple[catalogue.UseCaseSpec, list[str]]:
    """The config of one use case (its data under `relative`, use_cases/<name>) and the notes on every choice;
    `located` is where each flow is in the project (under `relative`, or the built-in operational evaluation)."""
    base_plan = by_env[""]
    eval_facts = flow_facts.read(base_plan.eval_flow)
    correct, metrics, why, evaluated_by, where = _evaluation_choice(pairing, base_plan, eval_facts, folder)
    outputs = [s.removeprefix("outputs.") for s in base_plan.mapping.values() if s.startswith("outputs.")]
    prediction = outputs[0] if outputs else next(iter(facts.outputs or {"output": None}))
    notes = [
        f"{where}: runs the standard flow on '{pairing.standard.dataset.name}', evaluated by {evaluated_by}: "
        f"data/{files['']} ({rows_text(len(base_plan.rows))}, {base_plan.sources})",
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
    json_answers = _json_answers(bool(judges), eval_facts, short(str(base_plan.eval_flow), folder),
                                 "evaluate.json_answers", "the judge's", notes)  # fmt: skip
    asks = bool(facts.llm_nodes or facts.model_config or facts.sdk_callers)
    flow_json = _json_answers(asks, facts, short(str(facts.path), folder), "variants.<v>.json_answers",
                              "the flow's LLM", notes)  # fmt: skip
    per_env = _per_env(by_env, located, overlays, folder, notes)
    spec = catalogue.UseCaseSpec(
        name=use_case,
        dataset=f"{relative}/data/{files['']}",
        flow=located[facts.path],
        eval_flow=located[base_plan.eval_flow],
        inputs=dict(base_plan.inputs),
        label=base_plan.label,
        mapping=dict(base_plan.mapping),
        prediction=prediction,
        correct=correct or "correct",
        metrics=metrics,
        llm_node=llm_node,
        judges=judges,
        json_answers=json_answers,
        flow_json_answers=flow_json,
        datasets_by_env={env: f"{relative}/data/{f}" for env, f in files.items() if env and f != files[""]} or None,
        by_env=per_env or None,
    )
    return spec, notes
