"""Atomic file writes and JSON Lines helpers: an output is either the old file or the whole new one.

The text writers redact the secrets this process knows (stages/core/redaction.py): no key reaches a file
written through them, also when an LLM echoes it back in an answer or an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from stages.core import redaction


@contextmanager
def atomic_open(path: Path, mode: str = "w", fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`, on error remove it.

    Without `fsync`, a killed process still leaves the old file or the whole new one; only a crash of the machine
    itself may leave an empty or partial file (for files whose reader treats that as missing, e.g. cache entries).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, fsync: bool = True) -> None:
    with atomic_open(path, fsync=fsync) as handle:
        handle.write(redaction.redact(text))


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(redaction.redact(json.dumps(row, ensure_ascii=False)) + "\n")
            count += 1
    return count


def open_log(path: Path) -> IO[bytes]:
    """Open a process log for appending, readable by its owner only (0600, also when it already exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON Lines written by this toolkit (trusted input; user datasets go through datasets.load)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
