"""Repeats (`bulk.repeats: k`): every row runs k times, each repeat with its own LLM requests.

Repeat r of a row goes through the LLM proxy's `/r<r>` prefix, so its requests have cache keys of their own: at
temperature > 0 the k answers are k samples, each cached apart, and a rerun asks for none of them. With k > 1 the
run's and the evaluation's row records carry `repeat` (0..k-1) beside the stable `row_id`; with k = 1 they carry
no `repeat` at all, so outputs are exactly those of a run without repeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class RepeatsError(ValueError):
    """A repeats setting, or a record, that cannot be used; the message names the key or the record."""


def count(bulk: Mapping[str, Any]) -> int:
    """`bulk.repeats` (default 1); the config schema checked it when the params were loaded
    (stages/core/conf_schema.py: a whole number >= 1)."""
    return int(bulk.get("repeats", 1))


def tag(row_id: str, repeat: int, repeats: int) -> str:
    """The id a row's repeat runs under (its LLM requests are counted against it): the row id itself without
    repeats, `<row_id>#<repeat>` with them."""
    return row_id if repeats == 1 else f"{row_id}#{repeat}"


def of(record: Mapping[str, Any]) -> int:
    """The repeat index of a run or evaluation record (0 for records without repeats)."""
    return int(record.get("repeat", 0))


def in_records(records: Iterable[Mapping[str, Any]]) -> int:
    """How many repeats a set of records holds (1 for records without `repeat`)."""
    return 1 + max((of(record) for record in records), default=0)


def field(repeat: int, repeats: int) -> dict[str, int]:
    """The `repeat` field of a record: empty without repeats, so k = 1 writes exactly what it always did."""
    return {} if repeats == 1 else {"repeat": repeat}
