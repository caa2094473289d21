"""The engines this toolkit runs flows with, asked in order; prompt flow last, as the fallback (its error names what
a flow folder may hold): which engine runs a folder, its kind and what it declares."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

from stages.core.yaml_reader import load_yaml
from stages.engine.kinds import FlowError, FlowInterface, FlowKind, load_entry
from stages.engine.maf.adapter import MafEngine
from stages.engine.promptflow.adapter import PromptFlowEngine
from stages.engine.protocol import Engine

ENGINES: list[Engine] = [MafEngine(), PromptFlowEngine()]


def engine_for(flow: Path, prompt: str | None = None) -> tuple[Engine, FlowKind, Path]:
    """The engine that runs `flow`, its kind and the file that defines it; raises kinds.FlowError for no flow."""
    for engine in ENGINES[:-1]:
        if found := engine.detect(flow, prompt):
            return engine, *found
    fallback = ENGINES[-1]
    found = fallback.detect(flow, prompt)
    assert found is not None  # the fallback raises FlowError for a folder that is no flow
    return fallback, *found


def detect(flow: Path, prompt: str | None = None) -> tuple[FlowKind, Path]:
    """The kind of a flow folder (or .prompty file) and the file that defines it.

    A folder holding several .prompty files (one per variant) is a prompty flow when `prompt` names one.
    """
    return engine_for(flow, prompt)[1:]  # type: ignore[return-value]


def interface(flow: Path, prompt: str | None = None) -> FlowInterface:
    """The inputs and outputs a flow folder declares (read from its files; no engine library is imported)."""
    engine, kind, file = engine_for(flow, prompt)
    return engine.interface(kind, file)


def declares_model_config(flow: Path) -> bool:
    """Whether a flex flow's entry takes `model_config` (a class's `init:` or `__init__`, a function's parameter):
    it calls the LLM with the configuration it is given."""
    try:
        kind, flow_file = detect(flow)
    except FlowError:
        return False
    if kind is not FlowKind.FLEX:
        return False
    spec = load_yaml(flow_file.read_text(encoding="utf-8")) or {}
    if "model_config" in (spec.get("init") or {}):
        return True
    entry = load_entry(flow_file.parent.resolve(), spec.get("entry", ""), flow_file)
    target = entry.__init__ if inspect.isclass(entry) else entry
    return "model_config" in inspect.signature(target).parameters


def configure(runtime: Path) -> None:
    """Every engine's home under `runtime`, quiet and offline. Call before a flow loads."""
    for engine in ENGINES:
        engine.configure(runtime)


def row_of_request(headers: Mapping[str, str]) -> str | None:
    """The row id an LLM request made by `session.FlowSession` carries in its headers (None if it has none)."""
    for engine in ENGINES:
        if (row := engine.row_of_request(headers)) is not None:
            return row
    return None
