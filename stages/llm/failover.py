"""Failover: what answers an LLM request when the connection's endpoint does not.

A connection (`conf/llm/<name>.yaml`) may name fallbacks, tried in order once the LLM proxy's retries of the
primary run out (repeated 429, 5xx, timeouts, refused connections):
    fallbacks:
      - {name: backup, base_url_env: BACKUP_LLM_BASE_URL}  # another connection: the primary's keys, overridden
      - {response: "Sorry, the assistant is unavailable right now."}  # a fixed, graceful answer
A fallback connection gets its own LLM proxy (no cache: a fallback's answer must not be replayed as the
primary's), which adapts the request to its layout and model and retries as the primary does. A fixed response
is answered in the shape the request asked for (completion or chat). Which one answered is recorded by the
caller (the span's `llmops.answered_by`, the row's `llm.fallbacks`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stages.llm import connections


class FailoverConfigError(ValueError):
    """A fallback that cannot be used; the message names the connection and the entry."""


@dataclass(frozen=True)
class FixedResponse:
    """A graceful answer given when every connection failed."""

    text: str
    name: str = "fixed-response"

    def body(self, path: str, request: Mapping[str, Any]) -> bytes:
        """An OpenAI-style answer to `request` with `text` (chat or completion, after the request's path)."""
        chat = path.split("?")[0].endswith("/chat/completions")
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": self.text}
        else:
            choice["text"] = self.text
        return json.dumps({
            "id": f"fallback-{uuid.uuid4().hex[:12]}", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": self.name, "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }).encode()  # fmt: skip


Fallback = connections.Connection | FixedResponse


def parse(llm: Mapping[str, Any], env: Mapping[str, str]) -> list[Fallback]:
    """The fallbacks of an `llm` params block, connections resolved (their secrets from `env`)."""
    entries = llm.get("fallbacks") or []
    where = f"conf/llm/{llm.get('name')}.yaml: fallbacks"
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise FailoverConfigError(f"{where}: a list of connections ({{name, ...}}) or {{response: text}}")
    fallbacks: list[Fallback] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise FailoverConfigError(f"{where}[{index}]: an object, got {entry!r}")
        if "response" in entry:
            if set(entry) - {"response", "name"} or not isinstance(entry["response"], str):
                raise FailoverConfigError(f"{where}[{index}]: {{response: text}} takes only a text (and a name)")
            fallbacks.append(FixedResponse(entry["response"], str(entry.get("name", "fixed-response"))))
            continue
        if "name" not in entry:
            raise FailoverConfigError(f"{where}[{index}]: a connection needs a name (or give {{response: text}})")
        block = {k: v for k, v in llm.items() if k != "fallbacks"} | dict(entry)
        try:
            fallbacks.append(connections.resolve(block, env))
        except (connections.ConnectionConfigError, KeyError) as exc:
            raise FailoverConfigError(f"{where}[{index}] ({entry['name']}): {exc}") from None
    return fallbacks


def headers_for(connection: connections.Connection, headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers with the fallback connection's key instead of the primary's."""
    kept = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "api-key")}
    header = ("api-key", connection.api_key) if connection.type == "azure_openai" else (
        "Authorization", f"Bearer {connection.api_key}")  # fmt: skip
    return {**kept, header[0]: header[1]}
