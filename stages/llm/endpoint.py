"""The LLM endpoint as the proxy sees it: kept-alive connections, one send, and forwarding with retries.

`Endpoint.forward` retries 429, 408, 5xx, timeouts and dropped connections with the `RetryPolicy` (honouring
Retry-After), except a 5xx whose answer says the request itself is invalid (`rejects_request`); when retries
run out, or at once for such a 5xx, the answer is a 424 (`GIVE_UP_STATUS`) naming the last failure.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stages.llm.upstream import (
    RETRIABLE_STATUS,
    RetryPolicy,
    error_message,
    null_params_hint,
    rejects_request,
    retry_after_s,
    timeout_hint,
)

GIVE_UP_STATUS = 424  # not retried by prompt flow's LLM tools or the OpenAI client
# Not forwarded: hop-by-hop headers, and Accept-Encoding so that answers come back uncompressed (they are parsed).
_DROPPED_HEADERS = frozenset(
    {"host", "x-llmops-row", "content-length", "connection", "keep-alive", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade", "accept-encoding"}
)  # fmt: skip
# Connections to the endpoint are reused (no TCP or TLS handshake per request) while idle for less than this:
# below the keep-alive timeout of common servers (uvicorn, which serves llama.cpp, closes after 5 s), so a reused
# connection is rarely one the server has just closed; when it is, the attempt fails and is retried as any other.
KEEP_IDLE_S = 2.0


@dataclass(frozen=True)
class Answer:
    """An answer to a flow's request: status, body, content type; `give_up`: tell clients not to retry."""

    status: int
    body: bytes
    content_type: str = "application/json"
    give_up: bool = False  # retries ran out: tell clients not to retry


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()


class Endpoint:
    """One LLM endpoint (`url`): its kept-alive connections, each request sent and retried."""

    def __init__(
        self, url: str, retry: RetryPolicy, timeout_s: float, sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LLM endpoint {url!r} is not an http(s) URL")
        self.scheme, self.host, self.port, self.base_path = parts.scheme, parts.hostname, parts.port, parts.path
        self.retry, self.timeout_s, self._sleep, self._rng = retry, timeout_s, sleep, random.Random(seed)
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []  # keep-alive connections to the endpoint
        self._idle_lock = threading.Lock()

    def origin(self) -> str:
        return f"{self.scheme}://{self.host}{':' + str(self.port) if self.port else ''}"

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    def forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, count: Callable[..., None],
        request: Mapping[str, Any] | None = None,
    ) -> Answer:  # fmt: skip
        """Send to the endpoint, retrying what is retriable (`count(upstream=1)` per attempt, `count(retries=1)` per
        retry); the last failure becomes a 424 answer, and so does at once a 5xx that says the request is invalid
        (`rejects_request`), naming the request's null parameters."""
        forwarded = {name: value for name, value in headers.items() if name.lower() not in _DROPPED_HEADERS}
        failure = ""
        timed_out = False
        for attempt in range(self.retry.attempts):
            retry_after = None
            count(upstream=1)
            try:
                status, content_type, data, retry_after_header = self._send_once(method, path, forwarded, body)
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, dropped connection
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                timed_out = isinstance(exc, TimeoutError)
            else:
                timed_out = False
                if status not in RETRIABLE_STATUS:
                    return Answer(status, data, content_type)
                if rejects_request(status, data):
                    message = (
                        f"llm proxy: {method} {self.origin()}{path} was rejected (HTTP {status}: "
                        f"{error_message(data)[:300]}); not retried: the answer says the request is invalid, and the "
                        f"same request fails the same way.{null_params_hint(request)}"
                    )
                    return Answer(GIVE_UP_STATUS, error_body(message, "llm_proxy_request_rejected"), give_up=True)
                failure = f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
                retry_after = retry_after_s(retry_after_header)
            if attempt + 1 == self.retry.attempts:
                break
            if retry_after is not None and retry_after > self.retry.max_s:
                failure += f" (Retry-After {retry_after:g} s is above retry.max_s {self.retry.max_s:g} s)"
                break
            count(retries=1)
            self._sleep(retry_after if retry_after is not None else self.retry.backoff_s(attempt, self._rng))
        message = f"llm proxy: {method} {self.origin()}{path} failed after {attempt + 1} attempt(s): {failure}"
        if timed_out:
            message += timeout_hint(request, self.timeout_s)
        return Answer(GIVE_UP_STATUS, error_body(message, "llm_proxy_upstream_failed"), give_up=True)

    def _connection(self) -> http.client.HTTPConnection:
        """A kept-alive connection to the endpoint idle for less than KEEP_IDLE_S, else a new one."""
        now = time.monotonic()
        with self._idle_lock:
            while self._idle:
                since, connection = self._idle.pop()
                if now - since < KEEP_IDLE_S:
                    return connection
                connection.close()
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout_s)

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
