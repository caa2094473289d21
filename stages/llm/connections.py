"""LLM connections: non-secret settings come from params (`llm.*`), secrets only from the environment or `.env`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core import redaction

_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
NO_KEY = "unused"  # the key sent to a local server that ignores keys (the OpenAI client wants a non-empty one)


class ConnectionConfigError(RuntimeError):
    """A connection is misconfigured (a variable is missing); the message names the connection and variable."""


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines of a .env file (comments, blank lines, `export` and quotes allowed)."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := _DOTENV_LINE.match(line):
            key, value = match.groups()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            else:
                value = value.split(" #", 1)[0].strip()
            values[key] = value
    return values


def environment(root: Path) -> dict[str, str]:
    """The process environment overlaid on the project's `.env` (real environment variables win)."""
    return {**read_dotenv(root / ".env"), **os.environ}


@dataclass(frozen=True)
class Connection:
    """Everything needed to call an LLM. `repr` never shows the key."""

    name: str
    type: str  # "openai" (also any OpenAI-compatible server) or "azure_openai"
    api: str  # "completion" or "chat"
    model: str  # model name, or the deployment name on Azure OpenAI
    base_url: str
    api_key: str = field(repr=False)
    api_version: str | None = None
    request_timeout_s: float = 60.0
    concurrency: int = 1  # rows run at once against this endpoint
    # The LLM proxy removes null parameters from requests (an endpoint that rejects a null presence_penalty).
    drop_null_params: bool = False
    # The LLM proxy adds max_tokens to a completion or chat request that has none: a base model served by llama.cpp
    # otherwise generates until its context is full (minutes per request on a CPU). None: requests as they are.
    default_max_tokens: int | None = None
    # The endpoint takes a llama.cpp GBNF `grammar` on its completion API: a request that must answer JSON gets one.
    json_grammar: bool = False
    # The endpoint serves no /embeddings (llama.cpp serving a chat model): the LLM proxy answers them itself with the
    # project's offline embedding model (stages/data/embeddings.py, set by the run stage).
    local_embeddings: bool = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values to redact wherever this connection's requests, errors or logs are written."""
        return () if self.api_key == NO_KEY else (self.api_key,)


def concurrency(llm: Mapping[str, Any], key: str = "llm") -> int:
    """The `concurrency` of an `llm` (or `judge`) params block: how many rows run at once (default 1)."""
    value = llm.get("concurrency", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConnectionConfigError(
            f"connection '{llm.get('name')}': {key}.concurrency must be a whole number >= 1, got {value!r} "
            f"(conf/llm/{llm.get('name')}.yaml)"
        )
    return value


def resolve(llm: Mapping[str, Any], env: Mapping[str, str]) -> Connection:
    """Build the connection described by the `llm` params block, reading secrets from `env`; the key read is
    registered for redaction in this process (stages/core/redaction.py)."""
    name = llm["name"]

    def required(var: str) -> str:
        value = env.get(var, "").strip()
        if not value:
            raise ConnectionConfigError(
                f"connection '{name}': environment variable {var} is not set (set it in the environment or in .env,"
                " see .env.example)"
            )
        return value

    kind = llm["type"]
    if kind == "openai":
        # Where the endpoint is, like the key, may come from the environment (`base_url_env`: OPENAI_BASE_URL, the
        # OpenAI SDK's own variable, for gateways, LiteLLM, vLLM or Ollama): then it stays out of params and dvc.lock.
        base_url = env.get(llm.get("base_url_env") or "", "").strip() or llm["base_url"]
        if llm.get("api_key_required", True):
            api_key = required(llm["api_key_env"])
        else:  # a local server that ignores keys
            api_key = env.get(llm["api_key_env"], "").strip() or NO_KEY
        api_version = None
    elif kind == "azure_openai":
        base_url = required(llm["endpoint_env"])
        api_key = required(llm["api_key_env"])
        api_version = str(llm["api_version"])
    else:
        raise ConnectionConfigError(f"connection '{name}': unknown type {kind!r} (expected openai or azure_openai)")
    connection = Connection(
        name=name,
        type=kind,
        api=llm["api"],
        model=str(llm["model"]),
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        api_version=api_version,
        request_timeout_s=float(llm.get("request_timeout_s", 60)),
        concurrency=concurrency(llm),
        drop_null_params=flag(llm, "drop_null_params"),
        default_max_tokens=_default_max_tokens(llm),
        json_grammar=flag(llm, "json_grammar"),
        local_embeddings=flag(llm, "local_embeddings"),
    )
    redaction.register(*connection.secrets)
    return connection


def _default_max_tokens(llm: Mapping[str, Any]) -> int | None:
    value = llm.get("default_max_tokens")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConnectionConfigError(
            f"connection '{llm.get('name')}': default_max_tokens must be a whole number >= 1 or null, got {value!r} "
            f"(conf/llm/{llm.get('name')}.yaml)"
        )
    return value


def flag(llm: Mapping[str, Any], key: str) -> bool:
    """A true/false setting of an `llm` params block (default false), checked."""
    value = llm.get(key, False)
    if not isinstance(value, bool):
        raise ConnectionConfigError(
            f"connection '{llm.get('name')}': {key} must be true or false, got {value!r} "
            f"(conf/llm/{llm.get('name')}.yaml)"
        )
    return value


def check_reachable(connection: Connection, timeout_s: float = 3.0) -> None:
    """Fail fast, before a run starts, when nothing listens at the connection's endpoint."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(connection.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            pass
    except OSError as exc:
        hint = " Start the embedded LLM with `make llm` (or `llmops llm start`)." if connection.name == "local" else ""
        raise ConnectionConfigError(
            f"connection '{connection.name}': cannot reach {parts.scheme}://{parts.hostname}:{port} ({exc}).{hint}"
        ) from None
