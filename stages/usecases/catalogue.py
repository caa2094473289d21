"""The use-case catalogue: write a use case's config (conf/use_cases/<name>.yaml) and register it in conf/."""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stages.core.io import write_text
from stages.usecases import flow_facts

_DEFAULTS_LINE = re.compile(r"^(\s*-\s*use_cases:\s*\[)([^\]]*)(\].*)$", re.MULTILINE)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class CatalogueError(ValueError):
    """A use case cannot be added as asked; the message says which file or argument is wrong."""


@dataclass(frozen=True)
class UseCaseSpec:
    name: str
    dataset: str  # paths relative to the project root
    flow: str
    eval_flow: str
    inputs: tuple[str, ...] | dict[str, str]  # dataset columns, or flow input -> column when names differ
    label: str
    mapping: dict[str, str]  # eval flow input -> data.<column> | outputs.<name>
    prediction: str  # run output shown as the prediction in reports
    correct: str  # eval output with per-row correctness
    llm_node: str | None = None  # the LLM node of a DAG flow
    prompt: str | dict[str, str] | None = None  # every variant's prompt file (per LLM API), None = the flow's own
    variants: tuple[str, ...] = ("v1", "v2")
    variant_node_variants: dict[str, dict[str, str]] | None = None  # variant -> the DAG node variants it selects
    params: dict[str, object] = field(default_factory=lambda: {"temperature": 0})
    datasets_by_env: dict[str, str] | None = None  # the dataset of the envs (any conf/env name) that differ
    lists: tuple[str, ...] = ()  # inputs holding a JSON list (data.lists), e.g. a chat history
    judges: tuple[str, ...] = ()  # LLM nodes of the evaluation flow bound to the judge LLM (evaluate.judges)
    by_env: dict[str, dict[str, object]] | None = None  # the envs whose eval_flow / inputs / mapping differ
    metrics: dict[str, str] | None = None  # headline metrics (None: accuracy, the mean of `correct`)
    json_answers: bool = False  # the evaluation flow parses its judge's answer as JSON (evaluate.json_answers)
    flow_json_answers: bool = False  # the flow parses its LLM's answer as JSON (variants.<v>.json_answers)
    origin: str = "written by `llmops add-use-case`"  # the config's header says where it came from


def check_name(name: str) -> None:
    """A use case's name becomes a params key and stage suffix: keep it a lower-case Python name."""
    if not _NAME.match(name):
        raise CatalogueError(f"use case name {name!r}: use lower-case letters, digits and _ (a Python name)")


def dvc_add(root: Path, *relative: str) -> None:
    """Track datasets with DVC (the project's own dvc, so it works without an activated venv)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", *relative], cwd=root, check=True)


def _by_env(key: str) -> str:
    """The value of sibling `key` for the composed env (env.name), else its `default` entry."""
    return f"${{oc.select:.{key}.${{env.name}},${{.{key}.default}}}}"


def _variant(block: dict[str, object], node_variants: dict[str, str] | None) -> dict[str, object]:
    """A copy of a variant's block (no YAML anchors), with the node variants it selects."""
    return copy.deepcopy(block) | ({"node_variants": dict(node_variants)} if node_variants else {})


def render_config(spec: UseCaseSpec) -> str:
    """conf/use_cases/<name>.yaml for the spec; every variant starts as the flow's own prompt and params."""
    check_name(spec.name)
    variant: dict[str, object] = {"llm_node": spec.llm_node} if spec.llm_node else {}
    variant |= ({"prompt": spec.prompt} if spec.prompt else {}) | {"params": dict(spec.params)}
    if spec.flow_json_answers:
        variant["json_answers"] = True
    inputs = spec.inputs if isinstance(spec.inputs, dict) else {column: column for column in spec.inputs}
    same_names = all(flow_input == column for flow_input, column in inputs.items())
    dataset: dict[str, object] = {"dataset": spec.dataset}
    if spec.datasets_by_env:  # the envs whose dataset differs; any other env (a new conf/env file too) the default
        dataset = {"datasets": {"default": spec.dataset, **spec.datasets_by_env}, "dataset": _by_env("datasets")}
    data: dict[str, object] = {"inputs": list(inputs) if same_names else inputs, "label": spec.label}
    if spec.lists:
        data["lists"] = list(spec.lists)
    evaluate: dict[str, object] = {"mapping": dict(spec.mapping)}
    if spec.judges:
        evaluate["judges"] = {node: {} for node in spec.judges}  # each judge on the judge LLM, its own prompt
    if spec.json_answers:
        evaluate["json_answers"] = True
    eval_flow: object = spec.eval_flow
    per_env = copy.deepcopy(spec.by_env or {})  # what an env overlay changes, chosen by env.name like the dataset
    if eval_flows := {env: v["eval_flow"] for env, v in per_env.items() if "eval_flow" in v}:
        dataset["eval_flows"] = {"default": spec.eval_flow, **eval_flows}
        eval_flow = _by_env("eval_flows")
    if env_inputs := {env: v["inputs"] for env, v in per_env.items() if "inputs" in v}:
        data["inputs_by_env"] = {"default": data["inputs"], **env_inputs}
        data["inputs"] = _by_env("inputs_by_env")
    if mappings := {env: v["mapping"] for env, v in per_env.items() if "mapping" in v}:
        evaluate["mapping_by_env"] = {"default": evaluate["mapping"], **mappings}
        evaluate["mapping"] = _by_env("mapping_by_env")
    body = {
        **dataset,
        "flow": spec.flow,
        "eval_flow": eval_flow,
        "data": data,
        "variant": "${variant.name}",
        "baseline": spec.variants[0],
        "node_variants": {},  # the run stage's params: a DAG's own node variants, {node: variant id}
        "variants": {name: _variant(variant, (spec.variant_node_variants or {}).get(name)) for name in spec.variants},
        # The headline metric (with a CI, compared across variants): the share of rows the evaluation marks correct.
        "metrics": dict(spec.metrics) if spec.metrics is not None else {"accuracy": spec.correct},
        "evaluate": evaluate,
        "report": {"prediction": spec.prediction, "raw_answer": spec.prediction, "correct": spec.correct},
    }
    header = (
        f"# {spec.name}: {spec.origin}. Edit freely: give variants their own prompt files\n"
        "# (prompt: file, or {completion: file, chat: file}) and params, then `llmops params`.\n"
    )
    return header + yaml.safe_dump({spec.name: body}, sort_keys=False)


def register(config_file: Path, name: str) -> bool:
    """Add `name` to the use_cases list of the defaults in conf/config.yaml; False if it is already there."""
    text = config_file.read_text(encoding="utf-8")
    match = _DEFAULTS_LINE.search(text)
    if not match:
        raise CatalogueError(f"{config_file}: no `- use_cases: [...]` line in the defaults list")
    names = [n.strip() for n in match.group(2).split(",") if n.strip()]
    if name in names:
        return False
    updated = f"{match.group(1)}{', '.join([*names, name])}{match.group(3)}"
    write_text(config_file, text[: match.start()] + updated + text[match.end() :])
    return True


# Where each checked field came from, for messages: the add-use-case flags (the importer passes its YAML keys).
FLAGS = {"llm_node": "--llm-node", "inputs": "--inputs", "label": "--label", "mapping": "--map",
         "correct": "--correct", "prediction": "--prediction"}  # fmt: skip


def _columns(path: Path) -> set[str] | None:
    """The columns of a JSON Lines dataset (None when the file is not there, e.g. not pulled, or not JSON)."""
    import json

    if not path.is_file():
        return None
    columns: set[str] = set()
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                columns |= set(row) if isinstance(row, dict) else set()
    except ValueError:
        return None
    return columns


def _relative(root: Path, path: Path) -> Path:
    """`path` relative to the project root when inside it (messages name files as the user sees them)."""
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return path


def _known(names: object) -> str:
    return ", ".join(sorted(names)) or "none"  # type: ignore[call-overload]


def _check_llm(facts: flow_facts.FlowFacts, spec: UseCaseSpec, where: dict[str, str]) -> tuple[str | None, list[str]]:
    """The LLM node the variants drive (chosen when not given) and what to tell the user about the flow's LLM."""
    from stages.engine.kinds import FlowKind

    notes: list[str] = []
    file = facts.file
    if facts.kind is FlowKind.FLEX:
        if spec.llm_node:
            raise CatalogueError(f"{where['llm_node']} {spec.llm_node}: {file} is a flex flow, it has no nodes")
        if not facts.model_config:
            own = f"; {', '.join(facts.sdk_callers)} build(s) an LLM client of its own" if facts.sdk_callers else ""
            notes.append(
                f"warning: {file}: entry {facts.entry} declares no model_config, so it is not handed the project's "
                f"LLM (conf/llm){own}: {OWN_CLIENT}"
            )
        return None, notes
    if facts.kind is not FlowKind.DAG:
        return None, notes
    if spec.llm_node:
        if spec.llm_node not in facts.llm_nodes:
            raise CatalogueError(
                f"{where['llm_node']} {spec.llm_node}: {file} has no `type: llm` node {spec.llm_node!r} "
                f"(its LLM nodes: {', '.join(facts.llm_nodes) or 'none'})"
            )
        chosen = spec.llm_node
    elif not facts.llm_nodes:
        chosen = None
        if not facts.sdk_callers:  # a flow without an LLM still runs and is evaluated; the LLM settings miss it
            notes.append(
                f"warning: {file}: nodes: no `type: llm` node and no python node calling an LLM SDK: the flow never "
                "asks an LLM, so conf/llm and the variants' prompt and params do not reach it"
            )
            return chosen, notes
        notes.append(
            f"warning: {file}: no `type: llm` node; {', '.join(facts.sdk_callers)} build(s) an LLM client of its "
            f"own: {OWN_CLIENT}; the variants' prompt and params do not reach it"
        )
    else:
        chosen = flow_facts.default_llm_node(facts)
        if len(facts.llm_nodes) > 1:
            notes.append(
                f"chose llm_node {chosen} of {file}'s LLM nodes ({', '.join(facts.llm_nodes)}) for the variants' "
                f"prompt and params ({where['llm_node']} to choose another); every LLM node runs on the project's LLM"
            )
    for binding in facts.connection_inputs:
        notes.append(
            f"{file}: {binding}: a python node's connection: it gets the project's LLM connection (conf/llm) in "
            "its place"
        )
    return chosen, notes


# What a flow's own LLM client reaches (engine.llm_environment sets these while the flow runs).
OWN_CLIENT = (
    "the run points OPENAI_API_KEY / OPENAI_BASE_URL and AZURE_OPENAI_API_KEY / AZURE_OPENAI_ENDPOINT at the "
    "project's LLM (conf/llm) through the LLM proxy, so a client built from them is cached and counted; one built "
    "from other variables or with a URL in its code bypasses it (docs/onboarding.md)"
)


def _check_inputs(spec: UseCaseSpec, facts: flow_facts.FlowFacts, where: dict[str, str], notes: list[str]) -> list:
    """The spec's inputs against the flow's; returns the list columns, with those of `type: list` inputs added."""
    inputs = _inputs(spec)
    lists = list(spec.lists)
    if not facts.inputs:
        return lists
    for flow_input in inputs:
        if flow_input not in facts.inputs:
            raise CatalogueError(
                f"{where['inputs']}: {flow_input!r} is not an input of {facts.file} (inputs: {_known(facts.inputs)})"
            )
    for flow_input, (kind, required) in facts.inputs.items():
        if required and flow_input not in inputs:
            raise CatalogueError(
                f"{where['inputs']}: {facts.file} input {flow_input!r} has no default and is not given"
            )
        every_env = [inputs, *(v.get("inputs", inputs) for v in (spec.by_env or {}).values())]
        for column in dict.fromkeys(m[flow_input] for m in every_env if flow_input in m):  # type: ignore[index]
            if kind == "list" and column not in lists:
                lists.append(column)
                notes.append(
                    f"data.lists: {column} (input {flow_input} of {facts.file} is `type: list`: a JSON list per row)"
                )
    return lists


def _inputs(spec: UseCaseSpec) -> dict[str, str]:
    return spec.inputs if isinstance(spec.inputs, dict) else {column: column for column in spec.inputs}


def _check_columns(root: Path, spec: UseCaseSpec, where: dict[str, str], notes: list[str]) -> None:
    """Each env's dataset has the columns the inputs, the label and the evaluation mapping read."""
    for env, relative in {"": spec.dataset, **(spec.datasets_by_env or {})}.items():
        columns = _columns(root / relative)
        if columns is None:
            notes.append(f"warning: {relative}: not read (not pulled?), its columns were not checked")
            continue
        env_inputs = (spec.by_env or {}).get(env, {}).get("inputs", _inputs(spec))
        env_mapping = (spec.by_env or {}).get(env, {}).get("mapping", spec.mapping)
        wanted = [(where["inputs"], c) for c in env_inputs.values()] + [(where["label"], spec.label)]  # type: ignore[union-attr]
        wanted += [
            (f"{where['mapping']} {k}", s.removeprefix("data."))
            for k, s in env_mapping.items()  # type: ignore[union-attr]
            if s.startswith("data.")
        ]
        for key, column in wanted:
            if column not in columns:
                raise CatalogueError(f"{key}: column {column!r} is not in {relative} (columns: {_known(columns)})")


def _check_evaluation(
    spec: UseCaseSpec, facts: flow_facts.FlowFacts, eval_facts: flow_facts.FlowFacts, where: dict[str, str]
) -> None:
    """The evaluation mapping reads data columns or the flow's outputs, gives every required input of the
    evaluation flow, and the evaluation flow has the `correct` output."""
    for name, source in spec.mapping.items():
        if eval_facts.inputs and name not in eval_facts.inputs:
            raise CatalogueError(
                f"{where['mapping']} {name}: not an input of {eval_facts.file} (inputs: {_known(eval_facts.inputs)})"
            )
        scope, _, key = source.partition(".")
        if scope not in ("data", "outputs") or not key:
            raise CatalogueError(f"{where['mapping']} {name}={source}: expected data.<column> or outputs.<name>")
        if scope == "outputs" and facts.outputs is not None and key not in facts.outputs:
            raise CatalogueError(
                f"{where['mapping']} {name}={source}: {facts.file} has no output {key!r} "
                f"(outputs: {_known(facts.outputs)})"
            )
    for name, (_, required) in eval_facts.inputs.items():
        if required and name not in spec.mapping:
            raise CatalogueError(
                f"{where['mapping']}: {eval_facts.file} input {name!r} has no default and is not mapped"
            )
    if eval_facts.outputs is not None and spec.correct not in eval_facts.outputs:
        raise CatalogueError(
            f"{where['correct']} {spec.correct}: {eval_facts.file} has no output {spec.correct!r} "
            f"(outputs: {_known(eval_facts.outputs)})"
        )


def _flow_facts(root: Path, spec: UseCaseSpec) -> tuple[flow_facts.FlowFacts, flow_facts.FlowFacts]:
    """The facts of the spec's flow (with its prompt) and evaluation flow, after checking its files exist."""
    from stages import engine

    datasets = {"": spec.dataset, **(spec.datasets_by_env or {})}.values()
    for label, relative in [*(("dataset", d) for d in datasets), ("flow", spec.flow), ("eval_flow", spec.eval_flow)]:
        if not (root / relative).exists() and not (root / f"{relative}.dvc").exists():
            raise CatalogueError(f"{label}: {relative} does not exist")
    try:
        prompt = next(iter(spec.prompt.values())) if isinstance(spec.prompt, dict) else spec.prompt
        facts = flow_facts.read(root / spec.flow, prompt)
        eval_facts = flow_facts.read(root / spec.eval_flow)
    except engine.FlowError as exc:
        raise CatalogueError(str(exc)) from None
    return (dataclasses.replace(facts, file=_relative(root, facts.file)),
            dataclasses.replace(eval_facts, file=_relative(root, eval_facts.file)))  # fmt: skip


def check(root: Path, spec: UseCaseSpec, where: dict[str, str] | None = None) -> tuple[UseCaseSpec, list[str]]:
    """Check a use case against its files: the flows exist and declare what the spec uses (LLM node, inputs,
    outputs), the dataset has the columns. Returns the spec with its choices filled in (LLM node, list inputs)
    and notes for the user (every choice made, and warnings). Errors name the file and the key (`where`)."""
    check_name(spec.name)
    where = {**FLAGS, **(where or {})}
    facts, eval_facts = _flow_facts(root, spec)
    llm_node, notes = _check_llm(facts, spec, where)
    lists = _check_inputs(spec, facts, where, notes)
    _check_columns(root, spec, where, notes)
    _check_evaluation(spec, facts, eval_facts, where)
    prediction = spec.prediction
    if not prediction:
        prediction = next(iter(facts.outputs or {"output": None}))
        notes.append(f"prediction: {prediction} (no outputs.* mapped: {facts.file}'s first output)")
    elif facts.outputs is not None and spec.prediction not in facts.outputs:
        raise CatalogueError(
            f"{where['prediction']} {spec.prediction}: {facts.file} has no output {spec.prediction!r} "
            f"(outputs: {_known(facts.outputs)})"
        )
    changes: dict[str, object] = {"llm_node": llm_node, "lists": tuple(lists), "prediction": prediction}
    return dataclasses.replace(spec, **changes), notes


def add(
    root: Path, spec: UseCaseSpec, overwrite: bool = False, where: dict[str, str] | None = None
) -> tuple[Path, list[str]]:
    """Check the spec against the files, write its config and register it. Returns the config path and the notes
    of the checks (choices made, warnings)."""
    spec, notes = check(root, spec, where)
    return write(root, spec, overwrite), notes


def write(root: Path, spec: UseCaseSpec, overwrite: bool = False) -> Path:
    """Write a checked spec's config (conf/use_cases/<name>.yaml) and register it in conf/config.yaml."""
    target = root / "conf" / "use_cases" / f"{spec.name}.yaml"
    if target.exists() and not overwrite:
        raise CatalogueError(f"{target} exists already (use --force to replace it)")
    write_text(target, render_config(spec))
    try:
        register(root / "conf" / "config.yaml", spec.name)
    except BaseException:  # not registered: the config goes too, so a rerun does not find it "exists already"
        target.unlink(missing_ok=True)
        raise
    return target
