"""Dataset loading and validation for the prepare stage: pure functions over rows."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


class DatasetError(ValueError):
    """A dataset row is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class Schema:
    inputs: tuple[str, ...]  # columns the flow reads: non-empty strings, except those in `lists`
    label: str  # the ground truth: any non-empty JSON value (a label, an answer, a list of entities)
    lists: tuple[str, ...] = ()  # inputs that hold a JSON list, which may be empty (e.g. a chat history)

    def __post_init__(self) -> None:
        unknown = [column for column in self.lists if column not in self.inputs]
        if unknown:
            raise DatasetError(f"data.lists: {', '.join(unknown)} not among the inputs {list(self.inputs)}")

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.inputs, self.label)

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Schema:
        """The schema a use case's `data` block declares (`inputs`, `label`, optional `lists`, `inputs_by_env`)."""
        every_env = (data.get("inputs_by_env") or {}).values()
        return cls.for_env(data["inputs"], data["label"], data.get("lists") or (), every_env)

    @classmethod
    def for_env(
        cls, inputs: list[str] | dict[str, str], label: str, lists: Iterable[str],
        every_env: Iterable[list[str] | dict[str, str]] = (),
    ) -> Schema:  # fmt: skip
        """The schema of one env's `inputs`: of `lists`, the columns this env reads (one env's overlay may map a
        list input, e.g. a chat history, that the others do not); each must be an input of some env."""
        columns = tuple(input_columns(inputs).values())
        known = set(columns).union(*(input_columns(other).values() for other in every_env))
        if unknown := [column for column in lists if column not in known]:
            raise DatasetError(f"data.lists: {', '.join(unknown)} not among the inputs {sorted(known)}")
        return cls(columns, label, tuple(column for column in lists if column in columns))


def input_columns(inputs: list[str] | dict[str, str]) -> dict[str, str]:
    """Flow input -> dataset column: a list means same names, a mapping renames (`{url: page_url}`)."""
    return dict(inputs) if isinstance(inputs, dict) else {name: name for name in inputs}


UTF8_BOM = b"\xef\xbb\xbf"  # accepted at the start of a file (editors on Windows write it)


def read_lines(path: Path, max_row_bytes: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file, a leading BOM dropped. A line that is not valid UTF-8,
    or longer than `max_row_bytes` (read no further than that: the rest is only counted), is a DatasetError."""
    with path.open("rb") as handle:
        for line_no in itertools.count(1):
            raw = handle.readline(max_row_bytes + 2)  # room for the line's own \r\n
            if not raw:
                return
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            body = raw.rstrip(b"\r\n")
            if len(body) > max_row_bytes:
                size = _line_size(raw, handle)
                raise DatasetError(
                    f"{path}:{line_no}: row of {size:,} bytes is larger than prepare.max_row_bytes "
                    f"({max_row_bytes:,}, conf/config.yaml)"
                )
            try:
                yield line_no, body.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(body[: exc.start].decode("utf-8")) + 1
                raise DatasetError(
                    f"{path}:{line_no}: not valid UTF-8 (byte 0x{body[exc.start]:02x} at column {column}); "
                    "save the file as UTF-8"
                ) from None


def _line_size(head: bytes, handle: BinaryIO, chunk: int = 1 << 20) -> int:
    """Bytes of the line that starts with `head`, its line end (\\n or \\r\\n) not counted: the rest of it is read
    from `handle` in chunks and not kept."""
    size, tail = len(head), head[-2:]
    while not tail.endswith(b"\n") and (block := handle.readline(chunk)):
        size, tail = size + len(block), (tail + block)[-2:]
    return size - (2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0)


def json_objects(path: Path, max_row_bytes: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSON Lines file read by `read_lines`; a line that is not
    a JSON object is a DatasetError naming the file and line."""
    for line_no, line in read_lines(path, max_row_bytes):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        yield line_no, row


def load(path: Path, schema: Schema, max_row_bytes: int) -> list[dict[str, Any]]:
    """Parse a JSON Lines dataset (UTF-8, rows of at most `max_row_bytes`) and check every row against `schema`,
    failing on the first bad row."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset not found (is it pulled? try `dvc pull`)")
    rows = []
    for line_no, row in json_objects(path, max_row_bytes):
        for field in schema.fields:
            if field not in row:
                raise DatasetError(f"{path}:{line_no}: field '{field}' is missing")
            value = row[field]
            if field in schema.lists:
                if not isinstance(value, list):
                    raise DatasetError(f"{path}:{line_no}: field '{field}' must be a JSON list, got {value!r}")
            elif field in schema.inputs and (not isinstance(value, str) or not value.strip()):
                raise DatasetError(f"{path}:{line_no}: field '{field}' must be a non-empty string, got {value!r}")
            if field == schema.label and (value is None or value == "" or value == []):
                raise DatasetError(f"{path}:{line_no}: field '{field}' (the label) is empty")
        rows.append({"_line": line_no, **row})
    if not rows:
        raise DatasetError(f"{path}: dataset has no rows")
    return rows


def row_id(row: dict[str, Any], schema: Schema) -> str:
    """A stable id from the row's input values: reordering or appending rows never changes it."""
    payload = json.dumps({field: row[field] for field in schema.inputs}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def assign_ids(rows: list[dict[str, Any]], schema: Schema, path: Path) -> list[dict[str, Any]]:
    """Give each row a `row_id`; two rows with the same inputs are an error (their results would collide)."""
    seen: dict[str, int] = {}
    prepared = []
    for row in rows:
        rid = row_id(row, schema)
        if rid in seen:
            raise DatasetError(f"{path}:{row['_line']}: duplicate inputs {schema.inputs} (same as line {seen[rid]})")
        seen[rid] = row["_line"]
        prepared.append({"row_id": rid, **{k: v for k, v in row.items() if k != "_line"}})
    return prepared


def subset(rows: list[dict[str, Any]], size: int | None, seed: int) -> list[dict[str, Any]]:
    """A deterministic sample of `size` rows (kept in dataset order), all rows when size is None.

    Rows are ranked by a seeded hash of their id, so appending rows to a dataset keeps most of the sample.
    """
    if size is None or size >= len(rows):
        return rows
    ranked = sorted(rows, key=lambda row: hashlib.sha256(f"{seed}:{row['row_id']}".encode()).hexdigest())
    chosen = {row["row_id"] for row in ranked[:size]}
    return [row for row in rows if row["row_id"] in chosen]
