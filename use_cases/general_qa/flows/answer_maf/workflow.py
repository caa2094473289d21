# ruff: noqa: E501, RUF012 (generated: the flow's literals as they are; class-level node inputs)
"""MAF workflow written by `llmops migrate` from use_cases/general_qa/flows/answer/answer.prompty.

Deterministic and without an LLM: one Executor per node, edges from the flow's ${...} references, the original
prompts and tool code beside this file (copied verbatim). MIGRATION.md lists what was and was not converted. A fresh
workflow per create_workflow() call (one instance cannot run concurrently); the variant's LLM node (prompty)
takes create_workflow(prompt=..., **params).
"""

from pathlib import Path
from typing import Any

import llmops_maf as rt
from agent_framework import WorkflowBuilder

HERE = Path(__file__).resolve().parent
INPUTS = {"question": None}  # the flow's inputs with their defaults (None: none)
REQUIRED = ["question"]  # the inputs without a default
OUTPUTS = {"output": "${prompty.output}"}  # the flow's outputs and what they reference
PROMPT = "answer.prompty"
PARAMS = {"temperature": 0, "max_tokens": 12}


class PromptyNode(rt.PromptyNode):
    """The prompty flow: the variant's .prompty file (its front matter's API and parameters, the variant's params win)."""

    inputs = {"question": "${inputs.question}"}


def create_workflow(prompt: str = PROMPT, **params: Any):
    """A fresh workflow of the flow."""
    executors = {
        "inputs": rt.Start({k: v for k, v in INPUTS.items() if k not in REQUIRED}, id="inputs"),
        "prompty": PromptyNode(HERE, prompt, {**PARAMS, **params}, id="prompty"),
        "outputs": rt.Outputs(OUTPUTS, keep=[], id="outputs"),
    }
    builder = WorkflowBuilder(name="answer", start_executor=executors["inputs"])
    builder.add_edge(executors["inputs"], executors["prompty"])
    builder.add_edge(executors["prompty"], executors["outputs"])
    return builder.build()
