"""The engines this toolkit runs flows with, asked in order; prompt flow last, as the fallback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stages.engine.kinds import FlowKind
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
