"""The row runtime: rows run at a given concurrency (threads, or worker processes), each within its time limit, a
row's failure recorded as its error, results put back in input order. Knows nothing of any flow engine: it calls a
`protocol.LoadedFlow`'s `line`, and records what a row writes to stderr or logs as the row's warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stages.core.redaction import redact
from stages.engine.kinds import FlowError
from stages.observability import tracing


@dataclass(frozen=True)
class RowResult:
    row_id: str
    outputs: dict[str, Any] | None
    error: str | None
    latency_s: float
    # Values the flow's aggregation nodes need from this row (empty for flows without aggregation).
    aggregation_inputs: dict[str, Any] = field(default_factory=dict, repr=False)
    # What the row's code wrote to stderr (and, in a DAG flow, its nodes to stdout) or logged at WARNING or above.
    warnings: tuple[str, ...] = ()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (the process's: rows of one session share it), then as before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_ROW_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("llmops_row_notes", default=None)
MAX_NOTES, MAX_NOTE_CHARS = 20, 500  # per row: warnings beyond these are cut


def note(text: str) -> None:
    """Record `text` as a warning of the row this context runs (nothing outside a row)."""
    notes = _ROW_NOTES.get()
    text = text.strip()
    if notes is None or not text:
        return
    if len(notes) < MAX_NOTES:
        notes.append(text if len(text) <= MAX_NOTE_CHARS else text[: MAX_NOTE_CHARS - 1] + "…")
    elif len(notes) == MAX_NOTES:
        notes.append("… more warnings not recorded")


class _RowNotesHandler(logging.Handler):
    """Records WARNING and above, logged while a row runs, on that row. On the root logger (a flow's own logging)
    and on the loggers an engine watches (`watch_logger`: prompt flow's execution logger, which is not in the
    logging tree and carries what nodes print to stderr, "[node in line N] stderr> ...")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    _printing = threading.local()  # set while a record is printed: what printing logs again is not handled

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "llmops_noted", False) or getattr(self._printing, "active", False):
            return
        record.llmops_noted = True
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is not the row's problem
            return
        prefix = "" if "stderr>" in message else f"{record.levelname} {record.name}: "
        note(prefix + message)
        # Printed as before this handler was attached (a registered logger without other handlers). Printing goes to
        # sys.stderr, which an engine may turn into a warning on its own logger while a row runs: not handled again.
        registered = record.name in logging.Logger.manager.loggerDict or record.name == "root"
        if registered and logging.lastResort and not _other_handlers(logging.getLogger(record.name)):
            self._printing.active = True
            try:
                logging.lastResort.handle(record)
            finally:
                self._printing.active = False


def _other_handlers(logger: logging.Logger | None) -> bool:
    """Whether a handler other than the row-notes handler would see a record of `logger` (its own or a parent's)."""
    while logger is not None:
        if any(handler is not _notes_handler for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent  # type: ignore[assignment]
    return False


class _RowStderr:
    """sys.stderr while rows run: what is written in a row's context (outside an engine's own capture of its
    output) is recorded on the row, and still written to the stream it wraps."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.strip():
            note(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_notes_handler = _RowNotesHandler()


_watched: list[logging.Logger] = []  # loggers outside the logging tree that an engine's rows log to


def watch_logger(logger: logging.Logger) -> None:
    """Record what `logger` (one outside the logging tree, e.g. an engine's own) logs while a row runs."""
    if logger not in _watched:
        _watched.append(logger)


def install_notes_handler() -> None:
    """Attach the row-notes handler to the root logger, to every registered logger that does not pass its records
    on to it (e.g. prompt flow's promptflow.core._prompty_utils), and to the watched loggers. Idempotent; called
    again when rows start, for loggers the flow created when it was loaded."""
    registered = [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    loggers = [logging.getLogger(), *(logger for logger in registered if not logger.propagate), *_watched]
    for logger in loggers:
        if _notes_handler not in logger.handlers:
            logger.addHandler(_notes_handler)


class RowFailed(Exception):
    """A row (or an aggregation) that the engine reports as failed: its message is the row's error as it is."""


def run_line(flow: Any, row_id: str, inputs: Mapping[str, Any], redact: Callable[[str], str]) -> RowResult:
    """One row of a `protocol.LoadedFlow` in this thread (and context); its failure becomes its error (`redact`ed),
    what it wrote to stderr or logged its warnings. An awaitable line is awaited here."""
    started = time.perf_counter()
    notes: list[str] = []
    _ROW_NOTES.set(notes)
    try:
        with tracing.row_span(row_id) as span:  # one trace per row (a no-op without tracing)
            line = flow.line(row_id, inputs)
            outputs, aggregation_inputs = asyncio.run(_awaited(line)) if inspect.isawaitable(line) else line
            span.set_attribute("llmops.warnings", len(notes))
    except BaseException as exc:  # a flow error belongs to the row, the run goes on
        message = str(exc) if isinstance(exc, RowFailed) else f"{type(exc).__name__}: {exc}"
        warnings = tuple(redact(note) for note in notes)
        return RowResult(row_id, None, redact(message), time.perf_counter() - started, warnings=warnings)
    finally:
        _ROW_NOTES.set(None)
    warnings = tuple(redact(note) for note in notes)
    return RowResult(row_id, jsonable(outputs), None, time.perf_counter() - started, aggregation_inputs, warnings)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@contextlib.contextmanager
def row_streams() -> Iterator[None]:
    """While rows run: what they write to stderr is recorded on them, and the process's streams are put back
    afterwards (an engine that swaps them per row, as prompt flow does, may leave another row's in place)."""
    streams = sys.stdout, sys.stderr
    sys.stderr = _RowStderr(sys.stderr)
    install_notes_handler()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class _Threads:
    """The threads of `run_in_threads` and their queues: rows go in numbered, in input order; results come out as
    rows finish. A row given up on (timed out) is abandoned: the thread that finishes it drops it and ends."""

    def __init__(
        self, run_line: Callable[[str, Mapping[str, Any]], RowResult], rows: Iterable[tuple[str, Mapping[str, Any]]],
        concurrency: int,
    ) -> None:  # fmt: skip
        self.run_line, self.concurrency = run_line, concurrency
        self.context = contextvars.copy_context()
        self.todo: queue.SimpleQueue[tuple[int, str, Mapping[str, Any]] | None] = queue.SimpleQueue()
        self.finished: queue.SimpleQueue[tuple[int, RowResult]] = queue.SimpleQueue()
        self.started: dict[int, float] = {}  # row number -> when a thread took it
        self.abandoned: set[int] = set()  # rows given up on; the thread that finishes one ends
        self.stopping = threading.Event()
        self.threads = 0
        self.pending = iter(rows)
        self.in_flight: dict[int, str] = {}  # row number -> row id, queued or running, oldest first
        self.numbers = itertools.count()

    def work(self) -> None:
        while (task := self.todo.get()) is not None and not self.stopping.is_set():
            number, row_id, inputs = task
            self.started[number] = time.perf_counter()
            result = self.context.copy().run(self.run_line, row_id, inputs)
            if number in self.abandoned:
                return
            self.finished.put((number, result))

    def add_thread(self) -> None:
        self.threads += 1
        threading.Thread(target=self.work, name=f"rows-{self.threads}", daemon=True).start()

    def fill(self) -> None:
        """Queue rows until `concurrency` more than the threads run are waiting."""
        for row_id, inputs in itertools.islice(self.pending, 2 * self.concurrency - len(self.in_flight)):
            number = next(self.numbers)
            self.in_flight[number] = row_id
            self.todo.put((number, row_id, inputs))

    def give_up(self, number: int, timeout_s: float) -> RowResult:
        """Row `number` timed out: abandoned, a new thread in its thread's place, its result a timeout."""
        elapsed = time.perf_counter() - self.started.pop(number)
        self.abandoned.add(number)
        self.add_thread()
        row_id = self.in_flight.pop(number)
        self.fill()
        return RowResult(row_id, None, f"row timed out after {timeout_s:g} s", elapsed)

    def stop(self) -> None:
        self.stopping.set()
        for _ in range(self.threads):
            self.todo.put(None)


def run_in_threads(
    run_line: Callable[[str, Mapping[str, Any]], RowResult],
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    concurrency: int,
    timeout_s: float | None,
) -> Iterator[RowResult]:
    """Rows in this process, `run_line` for each: `concurrency` long-lived threads run rows from a queue, each in
    a copy of the caller's context. This generator keeps up to `concurrency` more rows queued, so a thread that
    finishes a row starts the next without waiting for the consumer. A row past `timeout_s` (counted from when its
    thread took it) is yielded as timed out; its thread is left to finish it (its result is dropped, then it ends)
    and a new thread takes its place.

    Threads and queues, not a pool with a future per row: the bookkeeping of futures cost more CPU than the row
    itself asks of the engine, and one process's CPU is what limits a bulk run against a fast LLM.
    """
    pool = _Threads(run_line, rows, concurrency)
    try:
        pool.fill()
        for _ in range(min(concurrency, len(pool.in_flight))):
            pool.add_thread()
        while pool.in_flight:
            oldest = next(iter(pool.in_flight))  # rows start in order, so the oldest row is the first to time out
            wait_s = None
            if timeout_s is not None:  # a row not taken yet is about to be (every older row has finished)
                wait_s = max(0.0, pool.started.get(oldest, time.perf_counter()) + timeout_s - time.perf_counter())
            try:
                number, result = pool.finished.get(timeout=wait_s)
            except queue.Empty:
                if oldest in pool.started:
                    yield pool.give_up(oldest, timeout_s)  # type: ignore[arg-type]
                continue
            pool.started.pop(number, None)
            if pool.in_flight.pop(number, None) is None:
                continue  # finished just after it was given up on
            pool.fill()
            yield result
    finally:  # done, failed, or the consumer stopped early: the threads take no more rows
        pool.stop()


_WORKER_DONE = "done"


def _worker_main(open_session: Callable[[], Any], concurrency: int, tasks: Any, results: Any) -> None:
    """A worker process of `run_in_processes`: opens the session, runs rows from `tasks` until its None, sends
    each result (or the error that stopped the worker) to `results`, then `_WORKER_DONE`."""
    try:
        session = open_session()
        for result in session.run_rows(iter(tasks.get, None), concurrency):
            results.put(result)
    except BaseException as exc:  # the parent fails the run with this message
        results.put(f"{type(exc).__name__}: {exc}")
    results.put(_WORKER_DONE)


def run_in_processes(
    open_session: Callable[[], Any],
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    concurrency: int,
    processes: int,
) -> Iterator[RowResult]:
    """Rows over `processes` spawned workers sharing `concurrency`, each running `open_session()` (picklable: a
    top-level function or a partial of one) and its `run_rows`. A feeder thread hands rows out through a
    bounded queue (each worker takes one as a slot frees up), so memory stays bounded as in one process."""
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")  # never fork a process whose threads hold locks
    tasks, results = context.Queue(maxsize=2 * concurrency), context.Queue()
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    workers = [
        context.Process(target=_worker_main, args=(open_session, share, tasks, results), daemon=True, name=f"rows-{i}")
        for i, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    stop = threading.Event()

    def feed() -> None:
        for row in itertools.chain(rows, [None] * processes):
            while not stop.is_set():
                try:
                    tasks.put(row, timeout=0.5)
                    break
                except queue.Full:
                    continue

    feeder = threading.Thread(target=feed, name="rows-feeder", daemon=True)
    feeder.start()
    running = processes
    try:
        while running:
            try:
                item = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w in workers if not w.is_alive() and w.exitcode != 0]
                if dead and results.empty():
                    raise RuntimeError(f"worker process {dead[0].name} died (exit code {dead[0].exitcode})") from None
                continue
            if isinstance(item, RowResult):
                yield item
            elif item == _WORKER_DONE:
                running -= 1
            else:
                raise FlowError(f"worker process failed: {redact(item)}")
    finally:  # done, failed, or the consumer stopped early: stop feeding and end the workers
        stop.set()
        for worker in workers:
            worker.join(timeout=0.2 if running else 5)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        tasks.cancel_join_thread()
        feeder.join(timeout=2)


def in_input_order(results: Iterable[RowResult], row_ids: Sequence[str]) -> list[RowResult]:
    """`results` (e.g. from `FlowSession.run_rows`, in completion order) sorted as `row_ids`; each id exactly once."""
    by_id: dict[str, RowResult] = {}
    for result in results:
        if result.row_id in by_id:
            raise ValueError(f"row id {result.row_id!r} appears twice: row ids must be unique")
        by_id[result.row_id] = result
    if len(by_id) != len(row_ids) or not by_id.keys() <= set(row_ids):
        raise ValueError(f"got {len(by_id)} results for {len(row_ids)} rows")
    return [by_id[row_id] for row_id in row_ids]


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
