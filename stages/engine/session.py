"""A flow session: one flow loaded once, for one variant and LLM, by the engine that runs its kind, and its rows
run through the row runtime. What stages, the server and production evaluation use to run flows."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.core import redaction
from stages.engine import registry, requirements, runtime, staging
from stages.engine.binding import LLMBinding, NodeInputs, check_kind
from stages.engine.kinds import FlowKind
from stages.engine.protocol import LoadOptions
from stages.engine.runtime import RowFailed, RowResult


class AggregationError(RuntimeError):
    """A flow's aggregation (its aggregation nodes, a flex class's `__aggregate__`) failed; names what raised."""


def configure(runtime_dir: Path) -> None:
    """Every engine's home under `runtime_dir`, offline and quiet; secrets are redacted in this process's logs
    and standard streams from here on (stages/core/redaction.py). Call before a flow loads."""
    registry.configure(runtime_dir)


class FlowSession:
    """A flow loaded once and executed row by row in this process (or in worker processes)."""

    def __init__(
        self,
        flow: Path,
        *bindings: LLMBinding,
        node_inputs: NodeInputs | None = None,
        node_variants: Mapping[str, str] | None = None,
        row_timeout_s: float | None = None,
        copies: Path | None = None,
    ) -> None:
        """`bindings` wire the flow's LLM: at most one unless a DAG flow; for a DAG flow, one per LLM node that gets
        its own prompt or params, and every other LLM node runs on the first binding's connection.

        `node_inputs` sets inputs of any node of a DAG flow (a variant's `node_inputs`, e.g. a retriever's top_k).
        `node_variants` selects a DAG's own node variants ({node: variant id}; the others keep their default);
        `self.node_variants` says which ran. A row still running after `row_timeout_s` is recorded with a
        timeout error (None: no limit). With `copies` (a runtime folder) the flow loads from its copy there
        (staging.run_copy): what it writes beside its code stays out of `flow`.
        """
        self._init_args = (flow, bindings, dict(node_inputs or {}), dict(node_variants or {}), row_timeout_s, copies)
        self._row_timeout_s = row_timeout_s
        binding = bindings[0] if bindings else None
        self._engine, self.kind, flow_file = registry.engine_for(flow, binding.prompt if binding else None)
        redaction.register(*(secret for b in bindings for secret in b.connection.secrets))
        redaction.install(streams=False)
        if self.kind is not FlowKind.MAF:  # a MAF workflow runs in its own pinned environment, not this one
            requirements.check_requirements(flow)
        self._environment = self._engine.environment(bindings)
        runtime.install_notes_handler()
        check_kind(flow, self.kind, len(bindings), bool(node_inputs or node_variants))
        if copies is not None and (copy := staging.run_copy(flow, copies)) != flow:
            flow, flow_file = copy, copy / flow_file.name
        options = LoadOptions(node_inputs or {}, node_variants or {}, row_timeout_s)
        with runtime.environment(self._environment):  # a flow may build its client when it is loaded
            self._flow = self._engine.load(self.kind, flow_file, flow, bindings, options)
        self.node_variants: dict[str, str] = dict(self._flow.node_variants)

    def run(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        """Execute one row; a failure or a timeout is returned as the row's error (secrets redacted), never raised."""
        return next(self.run_rows([(row_id, inputs)]))

    def _run_line(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        return runtime.run_line(self._flow, row_id, inputs, redaction.redact)

    def run_rows(
        self, rows: Iterable[tuple[str, Mapping[str, Any]]], concurrency: int = 1, processes: int = 1
    ) -> Iterator[RowResult]:
        """Execute rows, at most `concurrency` at once, yielding each result as it completes (not in input order:
        see `runtime.in_input_order`). Rows are taken from `rows` as slots free up, so a long run holds no more than
        2 x `concurrency` rows at once; concurrency 1 runs them one after the other, in order. A row still running
        after the session's `row_timeout_s` is yielded with a timeout error and left to finish in the background.

        With `processes` > 1 the rows are spread over that many worker processes (each loads the flow once and
        runs its share of `concurrency`), for when this process's CPU, not the LLM, limits the run.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if min(processes, concurrency) > 1:
            opener = functools.partial(_open_in_worker, self._init_args)
            yield from runtime.run_in_processes(opener, rows, concurrency, min(processes, concurrency))
            return
        with runtime.row_streams(), runtime.environment(self._environment):
            yield from runtime.run_in_threads(self._run_line, rows, concurrency, self._row_timeout_s)

    def aggregate(self, results: list[RowResult], inputs: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Run the flow's aggregation over the successful rows; returns the metrics it logged. No row succeeded:
        nothing to aggregate, no metrics. Raises AggregationError when the flow's aggregation fails."""
        ok = [(result, row) for result, row in zip(results, inputs, strict=True) if result.error is None]
        if not ok:
            return {}
        columns = {name: [row[name] for _, row in ok] for name in (inputs[0] if inputs else {})}
        aggregation_inputs: dict[str, list[Any]] = {}
        for result, _ in ok:
            for name, value in result.aggregation_inputs.items():
                aggregation_inputs.setdefault(name, []).append(value)
        try:
            with runtime.environment(self._environment):
                return self._flow.aggregate(columns, aggregation_inputs)
        except RowFailed as exc:
            raise AggregationError(redaction.redact(str(exc))) from None


def _open_in_worker(init_args: tuple[Any, ...]) -> FlowSession:
    """The session of a worker process of `run_rows` (spawned: what configure() did to the parent process, other
    than to the environment it inherits, is done again)."""
    requirements.quiet()  # the parent session printed the requirements notes
    redaction.install()  # the session registers its connections' secrets
    for engine in registry.ENGINES:
        engine.prepare_worker()
    flow, bindings, node_inputs, node_variants, row_timeout_s, copies = init_args
    return FlowSession(flow, *bindings, node_inputs=node_inputs, node_variants=node_variants,
                       row_timeout_s=row_timeout_s, copies=copies)  # fmt: skip
