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
endpoint's status through would multiply the attempts. Other errors (400, 401, 404...) pass through unchanged,
never retried; a 400, 413 or 422 (the request's content, e.g. a prompt longer than the model's context) is
counted as `rejected`, per row: the evaluate stage records such a row's error and goes on.
Streaming requests (`stream: true`) are refused with a 400: a stream cannot be cached.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stages.llm import chat_bridge, failover, proxy_server
from stages.llm.cache import CacheStore, Usage, cache_key
from stages.llm.connections import Connection
from stages.llm.endpoint import GIVE_UP_STATUS as GIVE_UP_STATUS  # re-exported: what a give-up answers
from stages.llm.endpoint import Answer, Endpoint, error_body
from stages.llm.upstream import (
    REJECTED_STATUS,
    RequestAdapter,
    RetryPolicy,
    error_message,
)
from stages.observability import tracing

_REPEAT_PREFIX = re.compile(r"^/r(\d+)(/.*)$")
REPEAT_HEADER = "X-LLMOps-Repeat"  # sent upstream with every forwarded POST; never part of a key


def _usage_of(answer: Any) -> tuple[int, int]:
    """The prompt and completion tokens of a parsed answer (0, 0 when it has no readable `usage`)."""
    try:
        usage = answer.get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


_IN_PROCESS: dict[int, LLMProxy] = {}  # port -> a proxy serving in this process
_CALL: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("llm_call", default=None)  # one request's counts


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
        adapter: RequestAdapter = RequestAdapter(),  # noqa: B008 (a frozen dataclass: immutable)
    ) -> None:
        self.endpoint = Endpoint(upstream, retry, timeout_s, sleep, seed)
        self.store, self.retry, self.timeout_s, self._row_of = store, retry, timeout_s, row_of
        self.adapter = adapter
        self._lock = threading.Lock()
        self.total = Usage()
        self._rows: dict[str, Usage] = {}
        self.used_keys: set[str] = set()  # entries this proxy answered from or wrote to the cache
        self._key_locks: dict[str, tuple[threading.Lock, int]] = {}  # requests in flight: a lock and its users
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.name = "primary"  # the connection's name, recorded as `llmops.answered_by`
        # tried in order when the endpoint gave up: (name, its proxy and connection, or a fixed response)
        self.fallbacks: list[tuple[str, LLMProxy | failover.FixedResponse, Connection | None]] = []
        # answers /embeddings requests here instead of the endpoint (a connection's `local_embeddings`); cached and
        # counted as any answer; raises ValueError for a request it cannot answer
        self.embeddings: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __enter__(self) -> LLMProxy:
        self._server, self._thread = proxy_server.start(self.handle)
        _IN_PROCESS[self.port] = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            _IN_PROCESS.pop(self.port, None)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.endpoint.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not running"
        return self._server.server_address[1]

    def base_url(self, repeat: int = 0) -> str:
        return f"http://127.0.0.1:{self.port}/r{repeat}{self.endpoint.base_path}"

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
        if (call := _CALL.get()) is not None:
            call.add(**deltas)
        with self._lock:
            self.total.add(**deltas)
            if row is not None:
                self._rows.setdefault(row, Usage()).add(**deltas)

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one request from the flows (called by the HTTP handler, one thread per client connection), in an
        LLM call span; when the endpoint gave up, the fallbacks answer in turn (stages/llm/failover.py)."""
        if method != "POST":
            return self._handle(method, raw_path, headers, body)
        row = self._row_of(headers) if self._row_of else None
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        with tracing.llm_span(row, raw_path, request if isinstance(request, dict) else {}) as call:
            usage, token = Usage(), _CALL.set(Usage())
            try:
                answer = self._handle(method, raw_path, headers, body)
            finally:
                usage = _CALL.get() or usage
                _CALL.reset(token)
            answered_by = self.name
            if answer.give_up and self.fallbacks:
                answer, answered_by = self._fail_over(raw_path, headers, body, request, row)
            call.set(**{"llmops.cache": "hit" if usage.hits else "miss" if usage.misses else None,
                        "llmops.retries": usage.retries, "llmops.answered_by": answered_by,
                        "http.response.status_code": answer.status})  # fmt: skip
            if answer.status == 200:
                with contextlib.suppress(ValueError, AttributeError):
                    call.set(**tracing.response_attributes(json.loads(answer.body)))
            else:
                call.span.set_status(tracing.trace.StatusCode.ERROR, error_message(answer.body)[:300])
        return answer

    def _fail_over(
        self, raw_path: str, headers: Mapping[str, str], body: bytes, request: Any, row: str | None
    ) -> tuple[Answer, str]:
        """The first fallback's answer that is not a give-up, and its name (the last give-up if all give up)."""
        answer = Answer(GIVE_UP_STATUS, b"{}", give_up=True)
        for name, fallback, connection in self.fallbacks:
            if isinstance(fallback, failover.FixedResponse) or connection is None:
                path = _REPEAT_PREFIX.sub(r"\2", raw_path)
                answer = Answer(200, fallback.body(path, request if isinstance(request, dict) else {}))
            else:
                answer = fallback._handle("POST", raw_path, failover.headers_for(connection, headers), body)
            if not answer.give_up:
                prompt, completion = _usage_of(json.loads(answer.body)) if answer.status == 200 else (0, 0)
                self._count(row, errors=-1, fallbacks=1, prompt_tokens=prompt, completion_tokens=completion)
                return answer, name
        return answer, "none"

    def _handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        match = _REPEAT_PREFIX.match(raw_path)
        if not match:
            message = f"llm proxy: path {raw_path!r} does not start with /r<repeat>/ (use LLMProxy.base_url)"
            return Answer(404, error_body(message, "llm_proxy_bad_path"))
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
            return Answer(400, error_body("llm proxy: the request body is not a JSON object", "llm_proxy_bad_body"))
        if request.get("stream"):
            self._count(row, requests=1, errors=1)
            message = "llm proxy: streaming requests (stream: true) cannot be cached; set stream to false"
            return Answer(400, error_body(message, "llm_proxy_stream_refused"))
        try:
            route, bridged, backs = chat_bridge.translate(path.partition("?")[0], request, self.adapter.completion_only)
        except chat_bridge.BridgeError as exc:
            self._count(row, requests=1, errors=1)
            return Answer(400, error_body(f"llm proxy: {exc}", "llm_proxy_bridge_refused"))
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
    ) -> Answer:  # fmt: skip
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
                return Answer(200, data)
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
    ) -> Answer:  # fmt: skip
        """Forward a request the cache did not answer; store a 200 answer."""
        self._count(row, requests=1, misses=1)
        if self.embeddings is not None and path.partition("?")[0].endswith("/embeddings"):
            try:
                answer = Answer(200, json.dumps(self.embeddings(request)).encode())
            except ValueError as exc:
                answer = Answer(400, error_body(f"llm proxy: {exc}", "llm_proxy_embeddings_refused"))
        else:
            count = functools.partial(self._count, row)
            answer = self.endpoint.forward(method, path, {**headers, REPEAT_HEADER: str(repeat)}, body, count, request)
        if answer.status != 200:
            self._count(row, errors=1, rejected=int(answer.status in REJECTED_STATUS))
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


def from_params(
    connection: Connection,
    llm: Mapping[str, Any],
    llm_cache: Mapping[str, Any],
    cache_dir: Path,
    row_of: Callable[[Mapping[str, str]], str | None] | None = None,
    env: Mapping[str, str] | None = None,
    bridge_chat: bool = False,
    json_answers: bool = False,
) -> LLMProxy:
    """The proxy a stage runs for `connection` (see `for_connection`), with the cache in `cache_dir` when
    `llm_cache.enabled` (the folder is created either way: it is the stage's DVC output).
    `bridge_chat`: chat requests reach a completion-API connection's completion endpoint (chat_bridge.py); the
    stages set it for MAF workflows, whose clients speak chat (or the Responses API) only. `json_answers`: requests
    ask for a JSON object (the evaluate stage, for `evaluate.json_answers`)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    store = CacheStore(cache_dir) if llm_cache["enabled"] else None
    return for_connection(connection, llm, store, row_of, env, bridge_chat=bridge_chat, json_answers=json_answers)


def for_connection(
    connection: Connection,
    llm: Mapping[str, Any],
    store: CacheStore | None = None,
    row_of: Callable[[Mapping[str, str]], str | None] | None = None,
    env: Mapping[str, str] | None = None,
    fallbacks: bool = True,
    bridge_chat: bool = False,
    json_answers: bool = False,
) -> LLMProxy:
    """The proxy in front of `connection`: `llm.retry`, the connection's timeout and request adaptations (its layout,
    model, API version, `drop_null_params`, `default_max_tokens`, `json_grammar`; `json_answers`), `store` (None: no
    cache), and with `fallbacks` the connection's fallbacks (`llm.fallbacks`, their secrets from `env`, default
    os.environ)."""
    adapter = RequestAdapter(connection.type, connection.model, connection.api_version, connection.drop_null_params,
                             connection.default_max_tokens, bridge_chat and connection.api == "completion",
                             json_answers, connection.json_grammar)  # fmt: skip
    proxy = LLMProxy(connection.base_url, store, RetryPolicy.from_params(llm.get("retry")),
                     connection.request_timeout_s, row_of, adapter=adapter)  # fmt: skip
    proxy.name = connection.name
    if fallbacks:
        proxy.fallbacks = fallbacks_for(llm, env)
    return proxy


def fallbacks_for(
    llm: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> list[tuple[str, LLMProxy | failover.FixedResponse, Connection | None]]:
    """The connection's fallbacks (`llm.fallbacks`): each connection behind its own uncached proxy, or a fixed
    response."""
    import os

    result: list[tuple[str, LLMProxy | failover.FixedResponse, Connection | None]] = []
    for fallback in failover.parse(llm, os.environ if env is None else env):
        if isinstance(fallback, failover.FixedResponse):
            result.append((fallback.name, fallback, None))
        else:
            result.append((fallback.name, for_connection(fallback, llm, fallbacks=False), fallback))
    return result


def prune_after_success(proxy: LLMProxy, llm_cache: Mapping[str, Any]) -> int:
    """After a successful stage: drop entries this run did not use once older than `llm_cache.keep_days`."""
    if proxy.store is None:
        return 0
    return proxy.store.prune(proxy.used_keys, float(llm_cache["keep_days"]) * 86400)
