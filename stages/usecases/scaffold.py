"""`llmops new <name> --kind <kind>`: a runnable use case from the templates in stages/templates/ (a standard flow
of the kind, an exact-match evaluation flow, six sample rows), written and registered by the catalogue."""

from __future__ import annotations

import shutil
from pathlib import Path

from stages.core.io import write_text
from stages.usecases.catalogue import CatalogueError, UseCaseSpec, add, check_name, dvc_add, write

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


KINDS = {
    # kind: (LLM node, prompt files per API, the flow output that is the answer)
    "dag": ("answer", {"completion": "answer.jinja2", "chat": "answer.chat.jinja2"}, "answer"),
    "prompty": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "output"),
    "class": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "answer"),  # init `prompt`
    "function": (None, {"completion": "answer.prompty", "chat": "answer_chat.prompty"}, "answer"),  # kw `prompt`
    # a MAF workflow (workflow.py): create_workflow(prompt=..., **params) gets the variant's prompt and params
    "maf": (None, {"completion": "answer.jinja2", "chat": "answer.chat.jinja2"}, "answer"),
}


def scaffold(root: Path, name: str, kind: str) -> Path:
    """A runnable use case: standard flow of `kind`, evaluation flow, sample dataset (DVC-tracked), config."""

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
    if kind == "maf":  # flow_facts reads prompt flow flows only; the scaffold's inputs and output are known
        return write(root, spec)
    return add(root, spec)[0]
