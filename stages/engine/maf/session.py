"""The stage's side of a MAF flow: a worker process in the MAF environment (worker.py's protocol), fed rows.

`MafSession` has the shape of flow_engine.FlowSession (`run_rows`, `run`, `aggregate`, `kind`, `node_variants`),
so the run and evaluate stages treat both alike. One worker holds up to `concurrency` rows in flight (MAF is
async: each row a fresh workflow from `create_workflow(**params)`). The workflow's clients reach the LLM through
the stage's LLM proxy: the worker's environment points OPENAI_* and AZURE_OPENAI_* at it, and each request names
its row in a header (worker.py), so caching, retries and per-row token counts apply as for prompt flow. A worker
that dies fails its rows in flight, and every row after, with its exit code and the last lines it wrote.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.core import redaction
from stages.core.connections import Connection
from stages.core.flow_engine import AggregationError, FlowError, RowResult, llm_environment
from stages.engine.maf import WORKFLOW_FILE

WORKER = Path(__file__).with_name("worker.py")


def worker_environment(connection: Connection | None) -> dict[str, str]:
    """The variables a workflow's clients read, pointed at `connection` (the proxy's, in a run)."""
    if connection is None:
        return {}
    return {**llm_environment(connection), "OPENAI_MODEL": connection.model, "OPENAI_CHAT_MODEL_ID": connection.model}


class MafSession:
    """A MAF flow folder run by one worker process; see the module's docstring."""

    kind = "maf"

    def __init__(
        self,
        flow: Path,
        python: Path,
        connection: Connection | None = None,
        params: Mapping[str, Any] | None = None,
        row_timeout_s: float | None = None,
        concurrency: int = 1,
    ) -> None:
        """`python`: the MAF environment's interpreter (environment.ensure). `params` go to
        `create_workflow(**params)` (a variant's params and prompt paths)."""
        if not (flow / WORKFLOW_FILE).is_file():
            raise FlowError(f"{flow}: no {WORKFLOW_FILE} (a MAF flow folder exports create_workflow() from it)")
        if connection is not None:
            redaction.register(*connection.secrets)
        self.flow, self.node_variants = flow, {}
        self._init = {"op": "init", "flow": str(flow.resolve()), "params": dict(params or {}),
                      "env": worker_environment(connection), "row_timeout_s": row_timeout_s}  # fmt: skip
        self._python, self._concurrency = python, concurrency
        self._process: subprocess.Popen[str] | None = None
        self._messages: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.aggregates = False
        self._start(concurrency)

    def _start(self, concurrency: int) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        environment["PYTHONUNBUFFERED"] = "1"
        self._process = subprocess.Popen(
            [str(self._python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env=environment, cwd=self.flow,
        )  # fmt: skip
        self._messages = queue.SimpleQueue()
        threading.Thread(target=self._read_stdout, args=(self._process, self._messages), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._process,), daemon=True).start()
        self._concurrency = concurrency
        self._send({**self._init, "concurrency": concurrency})
        ready = self._messages.get()
        if ready is None or ready.get("op") != "ready":
            reason = ready.get("error") if ready else self._died()
            self.close()
            raise FlowError(f"{self.flow}: the MAF workflow did not load: {redaction.redact(str(reason))}")
        self.aggregates = bool(ready.get("aggregates"))

    @staticmethod
    def _read_stdout(process: subprocess.Popen[str], messages: queue.SimpleQueue[dict[str, Any] | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                messages.put(json.loads(line))
            except ValueError:
                print(f"maf worker: {line.rstrip()}", file=sys.stderr)
        messages.put(None)  # the worker is gone

    def _read_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr.append(line.rstrip())
            sys.stderr.write(redaction.redact(line))

    def _died(self) -> str:
        assert self._process is not None
        code = self._process.wait(timeout=10)
        time.sleep(0.05)  # the stderr reader's last lines
        tail = " | ".join(line for line in list(self._stderr)[-5:] if line.strip())
        return f"the MAF worker exited with code {code}" + (f": {tail}" if tail else "")

    def _send(self, message: Mapping[str, Any]) -> bool:
        process = self._process
        if process is None or process.stdin is None or process.poll() is not None:
            return False
        try:
            process.stdin.write(json.dumps(message, ensure_ascii=False, default=str) + "\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def run(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        return next(self.run_rows([(row_id, inputs)]))

    def run_rows(
        self, rows: Iterable[tuple[str, Mapping[str, Any]]], concurrency: int = 1, processes: int = 1
    ) -> Iterator[RowResult]:
        """Rows through the worker, at most 2 x `concurrency` sent ahead, each result as it completes. `processes`
        is accepted for FlowSession's signature; one async worker holds the rows in flight."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if concurrency != self._concurrency:
            self.close()
            self._start(concurrency)
        pending = iter(rows)
        in_flight: dict[str, float] = {}
        dead: str | None = None
        exhausted = False
        while True:
            while not exhausted and dead is None and len(in_flight) < 2 * concurrency:
                row = next(pending, None)
                if row is None:
                    exhausted = True
                    break
                row_id, inputs = row
                if row_id in in_flight:
                    raise ValueError(f"row id {row_id!r} appears twice: row ids must be unique")
                in_flight[row_id] = time.perf_counter()
                if not self._send({"op": "row", "id": row_id, "inputs": dict(inputs)}):
                    dead = self._died()
            if dead is not None:  # the worker is gone: its rows in flight and every later row fail with why
                for row_id, started in in_flight.items():
                    yield RowResult(row_id, None, redaction.redact(dead), time.perf_counter() - started)
                in_flight.clear()
                for row_id, _ in pending:
                    yield RowResult(row_id, None, redaction.redact(dead), 0.0)
                return
            if not in_flight:
                return
            message = self._messages.get()
            if message is None:
                dead = self._died()
                self._messages.put(None)  # later reads see the end too
                continue
            if message.get("op") != "result" or message.get("id") not in in_flight:
                continue
            in_flight.pop(message["id"])
            error = message.get("error")
            outputs = message.get("outputs") if error is None else None
            error = redaction.redact(error) if error else None
            yield RowResult(str(message["id"]), outputs, error, float(message.get("latency_s") or 0.0),
                            message.get("aggregation_inputs") or {})  # fmt: skip

    def aggregate(self, results: list[RowResult], inputs: list[Mapping[str, Any]]) -> dict[str, Any]:
        """workflow.py's `aggregate(inputs=..., outputs=...)` over the successful rows (in row order); no
        `aggregate`, or no successful row: no metrics. Raises AggregationError when it fails."""
        ok = [(result, row) for result, row in zip(results, inputs, strict=True) if result.error is None]
        if not ok or not self.aggregates:
            return {}
        message = {"op": "aggregate", "inputs": [dict(row) for _, row in ok], "outputs": [r.outputs for r, _ in ok],
                   "aggregation_inputs": [r.aggregation_inputs for r, _ in ok]}  # fmt: skip
        if not self._send(message):
            raise AggregationError(redaction.redact(self._died()))
        while (answer := self._messages.get()) is not None and answer.get("op") != "metrics":
            pass
        if answer is None:
            self._messages.put(None)
            raise AggregationError(redaction.redact(self._died()))
        if answer.get("error"):
            raise AggregationError(redaction.redact(str(answer["error"])))
        return dict(answer.get("metrics") or {})

    def close(self) -> None:
        """End the worker (it finishes nothing more: every row was answered or given up)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(json.dumps({"op": "end"}) + "\n")
                process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()

    def __enter__(self) -> MafSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def workflow_params(prompt: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a variant gives `create_workflow(**params)`: `prompt` (its prompt file for the connection's API,
    relative to the flow folder) when it names one, and each of its LLM `params` by name."""
    return {**({"prompt": prompt} if prompt else {}), **params}


def open_session(
    root: Path, flow: Path, connection: Connection | None, params: Mapping[str, Any], row_timeout_s: float | None,
    concurrency: int,
) -> MafSession:  # fmt: skip
    """A session on `flow` in the project's MAF environment (built first when missing or stale)."""
    from stages.engine.maf import environment

    try:
        python = environment.ensure(root)
    except environment.EnvironmentError_ as exc:
        raise FlowError(f"{flow}: {exc}") from None
    return MafSession(flow, python, connection, params, row_timeout_s, concurrency)
