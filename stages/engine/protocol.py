"""The interface a flow engine implements (see stages/engine/__init__.py for how the pieces fit)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from stages.engine.binding import LLMBinding
from stages.engine.kinds import FlowInterface, FlowKind

LineResult = tuple[dict[str, Any], dict[str, Any]]  # a row's outputs, and what the flow's aggregation needs of it


@dataclass(frozen=True)
class LoadOptions:
    """How a session loads its flow, besides the bindings: a DAG's node inputs and node variants, and the time
    after which a row is given up on (None: no limit; the runtime enforces it, an engine may use it as a backstop)."""

    node_inputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    node_variants: Mapping[str, str] = field(default_factory=dict)
    row_timeout_s: float | None = None


@runtime_checkable
class LoadedFlow(Protocol):
    """One flow loaded once, for one variant and LLM; the row runtime calls it from several threads at once."""

    node_variants: Mapping[str, str]  # {node: variant id} that ran (DAG flows; empty otherwise)

    def line(self, row_id: str, inputs: Mapping[str, Any]) -> LineResult | Awaitable[LineResult]:
        """Run one row; raise to fail it (`runtime.RowFailed` for a message without the exception's type). May
        return an awaitable (an async engine): the runtime awaits it on the row's thread. `row_id` is for tagging
        the row's LLM requests (see `Engine.row_of_request`)."""
        ...

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """The flow's aggregation over the successful rows (their inputs as columns); its metrics. Raises
        `runtime.RowFailed` when the aggregation fails."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A flow engine: the kinds of flow folder it runs, and how it loads one into a `LoadedFlow`."""

    name: str

    def detect(self, flow: Path, prompt: str | None) -> tuple[FlowKind, Path] | None:
        """(kind, the file that defines the flow) when this engine runs `flow`, else None (without importing the
        engine's library). May raise kinds.FlowError for a folder that is its kind but broken."""
        ...

    def interface(self, kind: FlowKind, file: Path) -> FlowInterface:
        """The inputs and outputs the flow declares, read from its files."""
        ...

    def configure(self, runtime: Path) -> None:
        """Once per process before any flow loads: the engine's home, quiet and offline, under `runtime`."""
        ...

    def prepare_worker(self) -> None:
        """In a spawned worker process of the row runtime, before it loads the flow (what `configure` did to this
        process rather than to the environment the worker inherits)."""
        ...

    def environment(self, bindings: Sequence[LLMBinding]) -> dict[str, str]:
        """The environment variables set while the flow loads and runs rows: the LLM binding for code that builds
        its own client (e.g. binding.llm_environment of the first binding: the stage's LLM proxy)."""
        ...

    def load(self, kind: FlowKind, file: Path, flow: Path, bindings: Sequence[LLMBinding],
             options: LoadOptions) -> LoadedFlow:  # fmt: skip
        """The flow loaded for `bindings` (at most one unless a DAG); raises kinds.FlowError when it cannot be."""
        ...

    def row_of_request(self, headers: Mapping[str, str]) -> str | None:
        """The row id an LLM request made by a row of this engine carries in its headers, if any."""
        ...
