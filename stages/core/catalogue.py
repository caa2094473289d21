"""The use-case catalogue: write a use case's config (conf/use_cases/<name>.yaml) and register it in conf/."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stages.core.io import write_text

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
    params: dict[str, object] = field(default_factory=lambda: {"temperature": 0})
    datasets_by_env: dict[str, str] | None = None  # a dataset per env (dev/pr/prod) instead of one


def check_name(name: str) -> None:
    """A use case's name becomes a params key and stage suffix: keep it a lower-case Python name."""
    if not _NAME.match(name):
        raise CatalogueError(f"use case name {name!r}: use lower-case letters, digits and _ (a Python name)")


def dvc_add(root: Path, relative: str) -> None:
    """Track a dataset with DVC (the project's own dvc, so it works without an activated venv)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", relative], cwd=root, check=True)


def llm_nodes(flow_dir: Path) -> list[str]:
    """Names of a DAG flow's LLM nodes (none for prompty flows)."""
    dag = flow_dir / "flow.dag.yaml"
    if not dag.is_file():
        return []
    nodes = yaml.safe_load(dag.read_text(encoding="utf-8")).get("nodes", [])
    return [node["name"] for node in nodes if node.get("type") == "llm"]


def render_config(spec: UseCaseSpec) -> str:
    """conf/use_cases/<name>.yaml for the spec; every variant starts as the flow's own prompt and params."""
    check_name(spec.name)
    variant: dict[str, object] = {"llm_node": spec.llm_node} if spec.llm_node else {}
    variant |= ({"prompt": spec.prompt} if spec.prompt else {}) | {"params": dict(spec.params)}
    inputs = spec.inputs if isinstance(spec.inputs, dict) else {column: column for column in spec.inputs}
    same_names = all(flow_input == column for flow_input, column in inputs.items())
    dataset: dict[str, object] = {"dataset": spec.dataset}
    if spec.datasets_by_env:
        dataset = {"datasets": dict(spec.datasets_by_env), "dataset": "${.datasets[${env.name}]}"}
    body = {
        **dataset,
        "flow": spec.flow,
        "eval_flow": spec.eval_flow,
        "data": {"inputs": list(inputs) if same_names else inputs, "label": spec.label},
        "variant": "${variant.name}",
        "baseline": spec.variants[0],
        "variants": {name: copy.deepcopy(variant) for name in spec.variants},  # no YAML anchors
        # The headline metric (with a CI, compared across variants): the share of rows the evaluation marks correct.
        "metrics": {"accuracy": spec.correct},
        "evaluate": {"mapping": dict(spec.mapping)},
        "report": {"prediction": spec.prediction, "raw_answer": spec.prediction, "correct": spec.correct},
    }
    header = (
        f"# {spec.name}: written by `llmops add-use-case`. Edit freely: give variants their own prompt files\n"
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


def add(root: Path, spec: UseCaseSpec, overwrite: bool = False) -> Path:
    """Check the spec against the files, write its config and register it. Returns the config path."""
    datasets = (spec.datasets_by_env or {"": spec.dataset}).values()
    for label, relative in [*(("dataset", d) for d in datasets), ("flow", spec.flow), ("eval_flow", spec.eval_flow)]:
        if not (root / relative).exists() and not (root / f"{relative}.dvc").exists():
            raise CatalogueError(f"{label}: {relative} does not exist")
    nodes = llm_nodes(root / spec.flow)
    if spec.llm_node is None and len(nodes) > 1:
        raise CatalogueError(f"{spec.flow} has several LLM nodes ({', '.join(nodes)}): choose one with --llm-node")
    if spec.llm_node is None and nodes:
        spec = UseCaseSpec(**{**spec.__dict__, "llm_node": nodes[0]})
    target = root / "conf" / "use_cases" / f"{spec.name}.yaml"
    if target.exists() and not overwrite:
        raise CatalogueError(f"{target} exists already (use --force to replace it)")
    write_text(target, render_config(spec))
    register(root / "conf" / "config.yaml", spec.name)
    return target


TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
KINDS = {
    # kind: (LLM node, prompt files per API, the flow output that is the answer)
    "dag": ("answer", {"completion": "answer.jinja2", "chat": "answer.chat.jinja2"}, "answer"),
    "prompty": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "output"),
    "class": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "answer"),  # init `prompt`
    "function": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "answer"),  # kw `prompt`
}


def scaffold(root: Path, name: str, kind: str) -> Path:
    """A runnable use case: standard flow of `kind`, evaluation flow, sample dataset (DVC-tracked), config."""
    import shutil

    if kind not in KINDS:
        raise CatalogueError(f"--kind {kind}: not available yet (choose from {', '.join(KINDS)})")
    check_name(name)
    folder = root / "use_cases" / name
    if folder.exists():
        raise CatalogueError(f"{folder} exists already")
    llm_node, prompt, output = KINDS[kind]
    shutil.copytree(TEMPLATES / kind / "standard", folder / "flows" / "standard")
    shutil.copytree(TEMPLATES / "common" / "evaluate", folder / "flows" / "evaluate")
    (folder / "data").mkdir()
    shutil.copy2(TEMPLATES / "common" / "dataset.jsonl", folder / "data" / "dataset.jsonl")
    write_text(
        folder / "README.md",
        f"# {name}\n\nScaffolded by `llmops new {name} --kind {kind}`: a question-answering {kind} flow "
        "(`flows/standard`), an exact-match evaluation flow (`flows/evaluate`) and six sample rows "
        "(`data/dataset.jsonl`, DVC-tracked). Replace them with your own; the config is "
        f"`conf/use_cases/{name}.yaml`.\n",
    )
    dvc_add(root, f"use_cases/{name}/data/dataset.jsonl")
    spec = UseCaseSpec(
        name=name,
        dataset=f"use_cases/{name}/data/dataset.jsonl",
        flow=f"use_cases/{name}/flows/standard",
        eval_flow=f"use_cases/{name}/flows/evaluate",
        inputs=("question",),
        label="answer",
        mapping={"expected": "data.answer", "predicted": f"outputs.{output}"},
        prediction=output,
        correct="correct",
        llm_node=llm_node,
        prompt=prompt,
        params={"temperature": 0, "max_tokens": 12},
    )
    return add(root, spec)
