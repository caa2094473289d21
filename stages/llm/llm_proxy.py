"""The row-level LLM cache: a local HTTP proxy between the flows and the LLM endpoint.

The run and evaluate stages start one (`LLMProxy`, 127.0.0.1, a free port, a background thread) and hand the
flows a connection whose base URL points at it: `http://127.0.0.1:<port>/r<k>` + the endpoint's own path, where
k is the repeat index. Every flow kind and client (promptflow-tools, prompty, a flex flow's OpenAI client; the
OpenAI and Azure OpenAI path layouts) then goes through it. The OpenAI clients of prompties and of DAG flows' LLM
nodes skip the loopback HTTP when the proxy serves from their own process: they call `LLMProxy.handle` directly
(see `in_process` and stages/engine/promptflow/hooks.py), which answers exactly as over HTTP. For each request the proxy
- computes the key: sha256 of the canonical JSON of the request body, the path after `/r<k>` (with its query,
  e.g. Azure's api-version) and k; never of headers, so api keys never reach the cache;
- answers a hit from `CacheStore` (one JSON file per entry, written atomically);
- adapts the request to the endpoint (`RequestAdapter`): sends completion requests to the connection's model and
  translates between the OpenAI and Azure OpenAI path layouts (before the key is computed), so a flow written for
  either reaches the endpoint the connection names; drops null parameters when the connection says so
  (`drop_null_params`: llama.cpp answers a null penalty with a 500), after the key is computed;
- forwards a miss to the endpoint (headers passed on, Host fixed, plus `X-LLMOps-Repeat: k`, which endpoints
  ignore and the stub LLM uses to sample another answer per repeat at temperature > 0), retrying 429, 408, 5xx,
  timeouts and dropped connections with exponential backoff and full jitter, honouring Retry-After (`RetryPolicy`),
  except a 5xx whose answer says the request itself is invalid (`rejects_request`): the same request would fail
  the same way, so it is answered at once, naming the request's null parameters;
- serves the Responses API (MAF's OpenAIChatClient) by translating it to chat completions, and, for a
  completion-only endpoint when the stage asks (`bridge_chat`), chat to completions (stages/llm/chat_bridge.py),
  before the key is computed; the answer is translated back, from the cache too;
- counts a request as a row's when `row_of` finds the row in its headers (each engine's own: prompt flow's
  tracking header, the MAF worker's X-LLMOps-Row, which is not sent upstream);
- stores only 200 answers; an error is never cached;
- counts hits, misses, errors, upstream requests, retries and `usage` tokens, in total and per row.
When retries run out it answers 424 (Failed Dependency) with the last failure in the message, and
`x-should-retry: false`: prompt flow's LLM tools retry any 429/5xx up to 100 times themselves, so passing the
endpoint's status through would multiply the attempts. Other errors (400, 401, 404...) pass through unchanged.
Streaming requests (`stream: true`) are refused with a 400: a stream cannot be cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import http.client
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stages.core.io import write_text
from stages.llm import chat_bridge
from stages.llm.connections import Connection

RETRIABLE_STATUS = frozenset({408, 429, *range(500, 600)})
TRANSIENT_5XX = frozenset({502, 503, 504})  # gateways and overload: retried whatever the answer says
# An error message that says the request itself is wrong: the same request fails the same way every time.
# llama.cpp answers a null presence_penalty with 500 "argument 4: TypeError: wrong type".
_INVALID_REQUEST = re.compile(
    r"TypeError|ValueError|ArgumentError|wrong type|\binvalid\b|(?:not|be) a valid|validation error|unexpected keyword|"
    r"missing required|must be (?:a|an|of|greater|less|between)",
    re.IGNORECASE,
)
_AZURE_ROUTE = re.compile(r"^(?P<base>.*?)/openai/deployments/(?P<deployment>[^/]+)(?P<operation>/[^?]*)(?:\?.*)?$")
_OPERATIONS = ("/chat/completions", "/completions", "/embeddings")
GIVE_UP_STATUS = 424  # not retried by prompt flow's LLM tools or the OpenAI client
# Not forwarded: hop-by-hop headers, and Accept-Encoding so that answers come back uncompressed (they are parsed).
_DROPPED_HEADERS = frozenset(
    {"host", "x-llmops-row", "content-length", "connection", "keep-alive", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade", "accept-encoding"}
)  # fmt: skip
_REPEAT_PREFIX = re.compile(r"^/r(\d+)(/.*)$")
REPEAT_HEADER = "X-LLMOps-Repeat"  # sent upstream with every forwarded POST; never part of a key


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` requests; before attempt n+1 wait Retry-After, or a uniform draw in
    [0, min(max_s, base_s * 2**n)] (full jitter). A Retry-After above `max_s` ends the retries at once."""

    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0

    @classmethod
    def from_params(cls, block: Mapping[str, Any] | None) -> RetryPolicy:
        policy = cls(**(block or {}))
        if policy.attempts < 1 or policy.base_s < 0 or policy.max_s < 0:
            raise ValueError(f"llm.retry: attempts must be >= 1 and delays >= 0, got {dict(block or {})}")
        return policy

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_s, self.base_s * 2**retry))


def error_message(body: bytes) -> str:
    """The message of an endpoint's error answer: `error.message` (OpenAI), `message` or `detail`, else the text."""
    text = body[:2000].decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if parsed.get(key):
                return str(parsed[key])
    return text.strip()


def rejects_request(status: int, body: bytes) -> bool:
    """Whether a 5xx answer says the request itself is invalid (a wrong type, an invalid parameter): deterministic,
    so retrying it only multiplies the failure. 502/503/504 are always transient."""
    if status < 500 or status in TRANSIENT_5XX:
        return False
    return bool(_INVALID_REQUEST.search(error_message(body)))


@dataclass(frozen=True)
class RequestAdapter:
    """What the proxy changes in a request before its key is computed, for the endpoint it forwards to.

    `layout` is the endpoint's path layout (None: paths and models are forwarded as they are): `openai`
    (`<base>/chat/completions`) or `azure_openai` (`<base>/openai/deployments/<deployment>/chat/completions?...`);
    a request in the other layout
    (a flow's own AzureOpenAI client against llama.cpp, or an OpenAI client against Azure) is translated, with
    `model` as the deployment and `api_version` added. On the OpenAI layout, completion and chat requests are sent
    to `model` (the connection's: a flow's hard-coded model name does not bypass the run's LLM). With
    `drop_null_params`, top-level null parameters are removed (in the OpenAI API null means "not given"). With
    `default_max_tokens`, a completion or chat request that sets no max_tokens (nor max_completion_tokens) gets
    that many, before the cache key is computed (the bound changes the answer).
    """

    layout: str | None = None  # None: forward paths as they are
    model: str | None = None
    api_version: str | None = None
    drop_null_params: bool = False
    default_max_tokens: int | None = None
    completion_only: bool = False  # chat requests are bridged to the completion API (stages/llm/chat_bridge.py)

    def adapt(self, path: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path (with query) and body for the endpoint's layout and model; the same objects when nothing
        changes. Null parameters are kept here (the cache key has them): `without_nulls` drops them for sending."""
        route, _, query = path.partition("?")
        azure = _AZURE_ROUTE.match(path)
        if self.layout == "openai" and azure:
            route, query = azure["base"] + azure["operation"], ""
        elif self.layout == "azure_openai" and not azure and self.model:
            operation = next((op for op in _OPERATIONS if route.endswith(op)), None)
            if operation:
                base = route[: -len(operation)]
                route = f"{base}/openai/deployments/{self.model}{operation}"
                query = query or (f"api-version={self.api_version}" if self.api_version else "")
        to_model = self.layout == "openai" and self.model and route.endswith("/completions")
        if to_model and request.get("model") != self.model:
            request = {**request, "model": self.model}
        unbounded = request.get("max_tokens") is None and request.get("max_completion_tokens") is None
        if self.default_max_tokens and unbounded and route.endswith("/completions"):
            request = {**request, "max_tokens": self.default_max_tokens}
        adapted = route + (f"?{query}" if query else "")
        return (path if adapted == path else adapted), request

    def headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The key header the endpoint reads: an OpenAI client's `Authorization: Bearer <key>` also as Azure
        OpenAI's `api-key`, and the other way round (headers are never part of the cache key)."""
        names = {name.lower(): name for name in headers}
        if self.layout == "azure_openai" and "api-key" not in names and "authorization" in names:
            value = headers[names["authorization"]]
            if value.lower().startswith("bearer "):
                return {**headers, "api-key": value[7:]}
        if self.layout == "openai" and "authorization" not in names and "api-key" in names:
            return {**headers, "Authorization": f"Bearer {headers[names['api-key']]}"}
        return headers

    def without_nulls(self, request: dict[str, Any]) -> dict[str, Any]:
        """The body to send: without its top-level null parameters when `drop_null_params` (else `request`)."""
        if self.drop_null_params and any(value is None for value in request.values()):
            return {name: value for name, value in request.items() if value is not None}
        return request


def null_params_hint(request: Mapping[str, Any] | None) -> str:
    """What to do about a rejected request that sends null parameters ("" when it sends none)."""
    nulls = sorted(name for name, value in (request or {}).items() if value is None)
    if not nulls:
        return ""
    return (
        f" The request sends null for {', '.join(nulls)}: this endpoint does not accept null parameters (llama.cpp "
        "does not); set `drop_null_params: true` in the connection (conf/llm/<name>.yaml), or give the flow's LLM "
        "node these inputs."
    )


def timeout_hint(request: Mapping[str, Any] | None, timeout_s: float) -> str:
    """What to do about requests that timed out: the endpoint took longer than `request_timeout_s` to answer."""
    asked = (request or {}).get("max_tokens") or (request or {}).get("max_completion_tokens")
    size = f"; the request asks for up to {asked} tokens" if asked else "; the request sets no max_tokens"
    return (
        f" Each attempt waited request_timeout_s ({timeout_s:g} s){size}. An endpoint that serves one request at a "
        "time (llama.cpp) goes on generating an abandoned answer, so a retry waits behind it: on a slow or busy "
        "machine, raise request_timeout_s (conf/llm/<name>.yaml, or `llmops params llm.request_timeout_s=240 "
        "judge.request_timeout_s=240`), or bound the answer (max_tokens, default_max_tokens)."
    )


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

    def add(self, **counts: int) -> None:
        """Add to the named counts (only those: this runs for every request)."""
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)))

    def as_row(self) -> dict[str, int]:
        """The per-row figures the run stage writes beside each row's outputs."""
        return {"requests": self.requests, "cache_hits": self.hits, "errors": self.errors,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}  # fmt: skip

    def as_metrics(self) -> dict[str, dict[str, int]]:
        """The run's metrics: cache counts, what reached the endpoint, and tokens (of which from the cache)."""
        return {
            "cache": {"hits": self.hits, "misses": self.misses, "errors": self.errors},
            "llm_requests": {"upstream": self.upstream, "retries": self.retries},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                       "prompt_cached": self.cached_prompt_tokens,
                       "completion_cached": self.cached_completion_tokens},
        }  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    give_up: bool = False  # retries ran out: tell clients not to retry


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: back off as if there were none


def _error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()


def _usage_of(answer: Any) -> tuple[int, int]:
    """The prompt and completion tokens of a parsed answer (0, 0 when it has no readable `usage`)."""
    try:
        usage = answer.get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


_IN_PROCESS: dict[int, LLMProxy] = {}  # port -> a proxy serving in this process


def in_process(host: str | None, port: int | None) -> LLMProxy | None:
    """The proxy serving `host:port` from this process, if any: a client in the same process may call its
    `handle` directly instead of sending HTTP over loopback (the same answer, without two HTTP stacks' CPU)."""
    return _IN_PROCESS.get(port or 0) if host == "127.0.0.1" else None


class LLMProxy:
    """The caching, retrying proxy in front of one endpoint; a context manager that serves in a thread.

    `store` None disables the cache (requests are still retried and counted). `row_of` names the dataset row a
    request belongs to from its headers (for per-row usage); it is never part of the key.
    """

    def __init__(
        self,
        upstream: str,
        store: CacheStore | None,
        retry: RetryPolicy,
        timeout_s: float,
        row_of: Callable[[Mapping[str, str]], str | None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        adapter: RequestAdapter = RequestAdapter(),
    ) -> None:
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LLM endpoint {upstream!r} is not an http(s) URL")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._base_path = parts.path
        self.store, self.retry, self.timeout_s = store, retry, timeout_s
        self._row_of, self._sleep, self._rng = row_of, sleep, random.Random(seed)
        self.adapter = adapter
        self._lock = threading.Lock()
        self.total = Usage()
        self._rows: dict[str, Usage] = {}
        self.used_keys: set[str] = set()  # entries this proxy answered from or wrote to the cache
        self._key_locks: dict[str, tuple[threading.Lock, int]] = {}  # requests in flight: a lock and its users
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []  # keep-alive connections to the endpoint
        self._idle_lock = threading.Lock()

    def __enter__(self) -> LLMProxy:
        server = _Server(("127.0.0.1", 0), _handler(self))
        self._server = server
        # shutdown() waits for the loop's next poll: at the default 0.5 s, every stage would end half a second late.
        serve = functools.partial(server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="llm-proxy", daemon=True)
        self._thread.start()
        _IN_PROCESS[self.port] = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            _IN_PROCESS.pop(self.port, None)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not running"
        return self._server.server_address[1]

    def base_url(self, repeat: int = 0) -> str:
        return f"http://127.0.0.1:{self.port}/r{repeat}{self._base_path}"

    def connection(self, connection: Connection, repeat: int = 0) -> Connection:
        """`connection` routed through this proxy (same key, model and API; the key travels in headers only)."""
        return dataclasses.replace(connection, base_url=self.base_url(repeat))

    def totals(self) -> Usage:
        """A copy of the running totals (subtract two copies for the usage in between)."""
        with self._lock:
            return dataclasses.replace(self.total)

    def row_usage(self, row_id: str) -> Usage:
        """What the requests of `row_id` cost so far (taken out of the per-row table)."""
        with self._lock:
            return self._rows.pop(row_id, Usage())

    def _count(self, row: str | None, **deltas: int) -> None:
        with self._lock:
            self.total.add(**deltas)
            if row is not None:
                self._rows.setdefault(row, Usage()).add(**deltas)

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        """Answer one request from the flows (called by the HTTP handler, one thread per client connection)."""
        match = _REPEAT_PREFIX.match(raw_path)
        if not match:
            message = f"llm proxy: path {raw_path!r} does not start with /r<repeat>/ (use LLMProxy.base_url)"
            return _Answer(404, _error_body(message, "llm_proxy_bad_path"))
        repeat, path = int(match.group(1)), match.group(2)
        if method != "POST":  # e.g. GET /models: forwarded, never cached
            return self._forward(method, path, headers, body, None)
        row = self._row_of(headers) if self._row_of else None
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._count(row, requests=1, errors=1)
            return _Answer(400, _error_body("llm proxy: the request body is not a JSON object", "llm_proxy_bad_body"))
        if request.get("stream"):
            self._count(row, requests=1, errors=1)
            message = "llm proxy: streaming requests (stream: true) cannot be cached; set stream to false"
            return _Answer(400, _error_body(message, "llm_proxy_stream_refused"))
        try:
            route, bridged, backs = chat_bridge.translate(path.partition("?")[0], request, self.adapter.completion_only)
        except chat_bridge.BridgeError as exc:
            self._count(row, requests=1, errors=1)
            return _Answer(400, _error_body(f"llm proxy: {exc}", "llm_proxy_bridge_refused"))
        if backs:  # the endpoint gets another API's request: the query belonged to the client's route
            path, request, body = route, bridged, json.dumps(bridged, ensure_ascii=False).encode("utf-8")
        answer = self._answer(repeat, path, request, method, headers, body, row)
        if not backs or answer.status != 200:
            return answer
        translated = json.loads(answer.body)
        for back in backs:
            translated = back(translated)
        return dataclasses.replace(answer, body=json.dumps(translated, ensure_ascii=False).encode("utf-8"))

    def _answer(
        self, repeat: int, path: str, request: dict[str, Any], method: str, headers: Mapping[str, str], body: bytes,
        row: str | None,
    ) -> _Answer:  # fmt: skip
        """The endpoint's answer to a request as the endpoint takes it: from the cache, or forwarded."""
        adapted_path, adapted = self.adapter.adapt(path, request)
        sent = self.adapter.without_nulls(adapted)
        if adapted_path is not path or sent is not request:
            path, body = adapted_path, json.dumps(sent, ensure_ascii=False).encode("utf-8")
        headers = self.adapter.headers(headers)
        # The key keeps null parameters (null means "not given"): entries made before drop_null_params stay valid.
        key = cache_key(path, adapted, repeat)
        request = sent
        if self.store is None:
            return self._miss(key, path, repeat, request, method, headers, body, row)
        with self._single_flight(key):  # the same request from rows running at once reaches the endpoint once
            if (cached := self.store.get(key)) is not None:
                data = json.dumps(cached).encode()
                prompt, completion = _usage_of(cached)
                self._count(row, requests=1, hits=1, prompt_tokens=prompt, completion_tokens=completion,
                            cached_prompt_tokens=prompt, cached_completion_tokens=completion)  # fmt: skip
                with self._lock:
                    self.used_keys.add(key)
                return _Answer(200, data)
            return self._miss(key, path, repeat, request, method, headers, body, row)

    @contextlib.contextmanager
    def _single_flight(self, key: str) -> Iterator[None]:
        """Hold the key's lock: a second identical request waits for the first, then finds its answer cached."""
        with self._lock:
            lock, users = self._key_locks.get(key, (threading.Lock(), 0))
            self._key_locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._key_locks[key]
                if users == 1:
                    del self._key_locks[key]
                else:
                    self._key_locks[key] = (lock, users - 1)

    def _miss(
        self, key: str, path: str, repeat: int, request: dict[str, Any], method: str, headers: Mapping[str, str],
        body: bytes, row: str | None,
    ) -> _Answer:  # fmt: skip
        """Forward a request the cache did not answer; store a 200 answer."""
        self._count(row, requests=1, misses=1)
        answer = self._forward(method, path, {**headers, REPEAT_HEADER: str(repeat)}, body, row, request)
        if answer.status != 200:
            self._count(row, errors=1)
            return answer
        try:
            response = json.loads(answer.body)
        except ValueError:
            return answer  # not JSON: returned, not counted or cached
        prompt, completion = _usage_of(response)
        self._count(row, prompt_tokens=prompt, completion_tokens=completion)
        if self.store is not None:
            self.store.put(key, {"path": path, "repeat": repeat, "body": request}, response)
            with self._lock:
                self.used_keys.add(key)
        return answer

    def _forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, row: str | None,
        request: Mapping[str, Any] | None = None,
    ) -> _Answer:  # fmt: skip
        """Send to the endpoint, retrying what is retriable; the last failure becomes a 424 answer, and so does at
        once a 5xx that says the request is invalid (`rejects_request`), naming the request's null parameters."""
        forwarded = {name: value for name, value in headers.items() if name.lower() not in _DROPPED_HEADERS}
        failure = ""
        timed_out = False
        for attempt in range(self.retry.attempts):
            retry_after = None
            self._count(row, upstream=1)
            try:
                status, content_type, data, retry_after_header = self._send_once(method, path, forwarded, body)
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, dropped connection
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                timed_out = isinstance(exc, TimeoutError)
            else:
                timed_out = False
                if status not in RETRIABLE_STATUS:
                    return _Answer(status, data, content_type)
                if rejects_request(status, data):
                    message = (
                        f"llm proxy: {method} {self._endpoint()}{path} was rejected (HTTP {status}: "
                        f"{error_message(data)[:300]}); not retried: the answer says the request is invalid, and the "
                        f"same request fails the same way.{null_params_hint(request)}"
                    )
                    return _Answer(GIVE_UP_STATUS, _error_body(message, "llm_proxy_request_rejected"), give_up=True)
                failure = f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
                retry_after = retry_after_s(retry_after_header)
            if attempt + 1 == self.retry.attempts:
                break
            if retry_after is not None and retry_after > self.retry.max_s:
                failure += f" (Retry-After {retry_after:g} s is above retry.max_s {self.retry.max_s:g} s)"
                break
            self._count(row, retries=1)
            self._sleep(retry_after if retry_after is not None else self.retry.backoff_s(attempt, self._rng))
        message = f"llm proxy: {method} {self._endpoint()}{path} failed after {attempt + 1} attempt(s): {failure}"
        if timed_out:
            message += timeout_hint(request, self.timeout_s)
        return _Answer(GIVE_UP_STATUS, _error_body(message, "llm_proxy_upstream_failed"), give_up=True)

    def _endpoint(self) -> str:
        return f"{self._scheme}://{self._host}{':' + str(self._port) if self._port else ''}"

    def _connection(self) -> http.client.HTTPConnection:
        """A kept-alive connection to the endpoint idle for less than _KEEP_IDLE_S, else a new one."""
        now = time.monotonic()
        with self._idle_lock:
            while self._idle:
                since, connection = self._idle.pop()
                if now - since < _KEEP_IDLE_S:
                    return connection
                connection.close()
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self.timeout_s)

    def _send_once(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes, str | None]:
        connection = self._connection()
        try:
            connection.request(method, path, body=body if method == "POST" else None, headers=dict(headers))
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            with self._idle_lock:
                self._idle.append((time.monotonic(), connection))
        content_type = response.getheader("Content-Type") or "application/json"
        return response.status, content_type, data, response.getheader("Retry-After")


# Connections to the endpoint are reused (no TCP or TLS handshake per request) while idle for less than this:
# below the keep-alive timeout of common servers (uvicorn, which serves llama.cpp, closes after 5 s), so a reused
# connection is rarely one the server has just closed; when it is, the attempt fails and is retried as any other.
_KEEP_IDLE_S = 2.0


class _Server(ThreadingHTTPServer):
    """A thread per client connection. The listen backlog is larger than the default 5: with many rows opening
    connections at once, a full backlog drops connection attempts, which clients retry only after a second."""

    daemon_threads = True
    request_queue_size = 128


def _handler(proxy: LLMProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive with the flows' clients
        # The headers and the body go out in two writes; with Nagle's algorithm the body waits for the client's
        # delayed ACK of the headers (up to 40 ms on Linux), which made every request ~40 ms slower.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the stages print their own summary
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = proxy.handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            if answer.give_up:
                self.send_header("x-should-retry", "false")
            self.end_headers()
            self.wfile.write(answer.body)

        do_POST = do_GET = _serve

    return Handler


def from_params(
    connection: Connection,
    llm: Mapping[str, Any],
    llm_cache: Mapping[str, Any],
    cache_dir: Path,
    row_of: Callable[[Mapping[str, str]], str | None] | None = None,
    bridge_chat: bool = False,
) -> LLMProxy:
    """The proxy a stage runs for `connection`: `llm.retry`, `llm.request_timeout_s`, the connection's request
    adaptations (its layout, model, API version, `drop_null_params` and `default_max_tokens`), and the cache in
    `cache_dir` when `llm_cache.enabled` (the folder is created either way: it is the stage's DVC output).
    `bridge_chat`: chat requests reach a completion-API connection's completion endpoint (chat_bridge.py); the
    stages set it for MAF workflows, whose clients speak chat (or the Responses API) only."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    store = CacheStore(cache_dir) if llm_cache["enabled"] else None
    adapter = RequestAdapter(connection.type, connection.model, connection.api_version, connection.drop_null_params,
                             connection.default_max_tokens, bridge_chat and connection.api == "completion")  # fmt: skip
    return LLMProxy(connection.base_url, store, RetryPolicy.from_params(llm.get("retry")),
                    connection.request_timeout_s, row_of, adapter=adapter)  # fmt: skip


def prune_after_success(proxy: LLMProxy, llm_cache: Mapping[str, Any]) -> int:
    """After a successful stage: drop entries this run did not use once older than `llm_cache.keep_days`."""
    if proxy.store is None:
        return 0
    return proxy.store.prune(proxy.used_keys, float(llm_cache["keep_days"]) * 86400)
