# ruff: noqa: E501, RUF012 (generated: the flow's literals as they are; class-level node inputs)
"""MAF workflow written by `llmops migrate` from use_cases/web_classification/flows/classify/flow.dag.yaml.

Deterministic and without an LLM: one Executor per node, edges from the flow's ${...} references, the original
prompts and tool code beside this file (copied verbatim). MIGRATION.md lists what was and was not converted. A fresh
workflow per create_workflow() call (one instance cannot run concurrently); the variant's LLM node (classify)
takes create_workflow(prompt=..., **params).
"""

from pathlib import Path
from typing import Any

import llmops_maf as rt
from agent_framework import WorkflowBuilder

HERE = Path(__file__).resolve().parent
INPUTS = {
    "url": "https://www.trailcookbook.net/recipes/red-lentil-soup",
    "text": "Red lentil soup with cumin and lemon. Serves 4. Rinse the lentils, soften the onion in olive oil, add stock and simmer for 25 minutes.",
}  # the flow's inputs with their defaults (None: none)
REQUIRED = []  # the inputs without a default
OUTPUTS = {
    "category": "${normalize.output.category}",
    "valid": "${normalize.output.valid}",
    "raw": "${normalize.output.raw}",
}  # the flow's outputs and what they reference
# The variant's LLM node: create_workflow(prompt=..., **params) sets its template and params.
PROMPT = "classify_v1.jinja2"
PARAMS = {"temperature": 0, "max_tokens": 6, "stop": ["\n"], "presence_penalty": 0, "frequency_penalty": 0}


class ClassifyNode(rt.LLMNode):
    """LLM node `classify` (completion API, template classify_v1.jinja2)."""

    api = "completion"
    inputs = {"url": "${inputs.url}", "text": "${inputs.text}"}


class NormalizeNode(rt.PythonNode):
    """Python node `normalize`: normalize() of normalize.py."""

    inputs = {"answer": "${classify.output}"}


def create_workflow(prompt: str = PROMPT, **params: Any):
    """A fresh workflow of the flow."""
    executors = {
        "inputs": rt.Start({k: v for k, v in INPUTS.items() if k not in REQUIRED}, id="inputs"),
        "classify": ClassifyNode(HERE, prompt, {**PARAMS, **params}, id="classify"),
        "normalize": NormalizeNode(rt.load_function(HERE, "normalize.py", "normalize"), id="normalize"),
        "outputs": rt.Outputs(OUTPUTS, keep=[], id="outputs"),
    }
    builder = WorkflowBuilder(name="classify", start_executor=executors["inputs"])
    builder.add_edge(executors["inputs"], executors["classify"])
    builder.add_edge(executors["classify"], executors["normalize"])
    builder.add_edge(executors["normalize"], executors["outputs"])
    return builder.build()
