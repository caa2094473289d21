"""The row-level LLM cache's store (one JSON file per entry, written atomically; keys never of headers) and the
counts of what the proxy did (hits, misses, errors, upstream requests, retries, tokens), in total and per row."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core.io import write_text


def cache_key(path: str, body: Any, repeat: int) -> str:
    """The content key of a request: body (keys sorted), path with query, and repeat index."""
    canonical = json.dumps(
        {"body": body, "path": path, "repeat": repeat}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CacheStore:
    """Cache entries as `<root>/<key[:2]>/<key>.json`: the request (no headers), the answer, and when it was made.

    Each entry is written to a temp file and renamed into place, so a reader (or a killed run) sees the whole
    entry or none. Stray temp files of a killed run are ignored, and removed by `prune`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer, or None (also for an entry edited into something unreadable: it is made again)."""
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))["response"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        entry = {"key": key, "created": round(time.time(), 3), "request": dict(request), "response": dict(response)}
        # No fsync: a killed run leaves whole entries either way, and an entry a machine crash left unreadable is a
        # miss (see get). An fsync per entry would cost a bulk run more than the requests themselves.
        text = json.dumps(entry, ensure_ascii=False, sort_keys=True)  # dumps, not dump: dump encodes in pure Python
        write_text(self.path(key), text, fsync=False)

    def keys(self) -> Iterator[str]:
        for path in self.root.glob("??/*.json"):
            if not path.name.startswith("."):
                yield path.stem

    def prune(self, keep: set[str], max_age_s: float, now: float | None = None) -> int:
        """Delete entries not in `keep` created more than `max_age_s` ago, and stray temp files; returns the count."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.root.glob("??/.*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
        for key in list(self.keys()):
            if key in keep:
                continue
            path = self.path(key)
            try:
                created = float(json.loads(path.read_text(encoding="utf-8"))["created"])
            except (ValueError, KeyError, TypeError):
                created = 0.0  # unreadable: old
            if now - created > max_age_s:
                path.unlink()
                removed += 1
        for shard in self.root.glob("??"):
            if shard.is_dir() and not any(shard.iterdir()):
                shard.rmdir()
        return removed


@dataclass
class Usage:
    """Request accounting. `requests` = hits + misses + refused; `errors` = requests answered with an error."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    upstream: int = 0  # HTTP attempts sent to the endpoint, retries included
    retries: int = 0
    prompt_tokens: int = 0  # `usage` of every answer returned, hits included
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # the part of the above answered from the cache
    cached_completion_tokens: int = 0
    fallbacks: int = 0  # requests a fallback answered (stages/llm/failover.py)
    # errors the endpoint answered with a request-content 4xx (upstream.REJECTED_STATUS: a prompt longer than the
    # model's context), never retried: the same request fails the same way; an error of its row, not of the stage
    rejected: int = 0

    def add(self, **counts: int) -> None:
        """Add to the named counts (only those: this runs for every request)."""
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)))

    def as_row(self) -> dict[str, int]:
        """The per-row figures the run stage writes beside each row's outputs."""
        return {"requests": self.requests, "cache_hits": self.hits, "errors": self.errors,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                **({"fallbacks": self.fallbacks} if self.fallbacks else {})}  # fmt: skip

    def as_metrics(self) -> dict[str, dict[str, int]]:
        """The run's metrics: cache counts, what reached the endpoint, and tokens (of which from the cache)."""
        return {
            "cache": {"hits": self.hits, "misses": self.misses, "errors": self.errors},
            "llm_requests": {"upstream": self.upstream, "retries": self.retries},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                       "prompt_cached": self.cached_prompt_tokens,
                       "completion_cached": self.cached_completion_tokens},
        }  # fmt: skip
