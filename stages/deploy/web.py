"""HTTP plumbing shared by the local deployment servers and the router: JSON bodies, API-key auth, ready files.

A request body is read only once the route and the key are checked, and only when its `Content-Length` is
given, well-formed and within the limit (`targets.local.max_request_bytes`): an unauthenticated or oversized
request is answered at once (401, 413; 400 or 411 for a bad or missing length) and its connection closed, with
nothing of its body read (a client that sends `Expect: 100-continue` gets its `100 Continue` only then).
"""

from __future__ import annotations

import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stages.core import redaction
from stages.core.io import write_json
from stages.llm.llm_server import started_at

# The response header naming the deployment that answered (the name Azure ML managed endpoints use).
DEPLOYMENT_HEADER = "azureml-model-deployment"
KEY_ENV = "LLMOPS_DEPLOY_KEY"  # how a server process receives the endpoint key from `llmops deploy` (env only)
LIMIT_KEY = "targets.local.max_request_bytes"  # where the body limit is configured (conf/deploy/<env>.yaml)


class BodyError(Exception):
    """A request whose body is not read: the status and message it is answered with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent clients must not be refused at accept


class JSONHandler(BaseHTTPRequestHandler):
    """A handler that speaks JSON, checks `Authorization: Bearer <key>` and never logs requests."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no wait for the client's delayed ACK
    timeout = 60  # seconds a client may take to send a request (or keep an idle connection); then it is closed
    api_key = ""  # set on a subclass by the process that serves
    max_body_bytes = 0  # likewise: the largest request body read
    _body_read = False
    _continue_pending = False

    def log_message(self, format: str, *args: Any) -> None:  # the access log could carry secrets in URLs
        pass

    def authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key.encode())
        if not ok:
            self.reply(401, {"error": "missing or wrong API key (Authorization: Bearer <key>)"})
        return ok

    def body(self) -> bytes:
        """The request body, read after checking its length; raises BodyError (nothing read) when it is refused."""
        if self.headers.get("Transfer-Encoding"):
            raise BodyError(411, "send the body with a Content-Length (chunked transfer encoding is not accepted)")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            if self.command in ("POST", "PUT"):
                raise BodyError(411, f"a {self.command} needs a Content-Length header")
            return b""
        if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
            shown = ", ".join(repr(value[:40]) for value in lengths)
            raise BodyError(400, f"malformed Content-Length header: {shown} (expected one whole number of bytes)")
        length = int(lengths[0])
        if length > self.max_body_bytes:
            raise BodyError(
                413, f"request body of {length} bytes is over the limit of {self.max_body_bytes} bytes ({LIMIT_KEY})"
            )
        if self._continue_pending:  # the client waits for this before it sends the body
            self._continue_pending = False
            self.send_response_only(100)
            self.end_headers()
        data = self.rfile.read(length)
        self._body_read = True
        if len(data) < length:  # the client closed its side before sending it all: no answer can reach it
            self.close_connection = True
            raise BodyError(400, f"the request body ended after {len(data)} of {length} bytes")
        return data

    def _unread_body(self) -> bool:
        if self._body_read:
            return False
        return bool(self.headers.get("Transfer-Encoding")) or (self.headers.get("Content-Length") or "0").strip() != "0"

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.reply_bytes(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers)

    def reply_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer; a request whose body was not read has its connection closed after the answer (the unread body
        cannot be told apart from a next request)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self._unread_body():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the client went away before the answer: nothing to tell it
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        """Hold `100 Continue` back until the body is about to be read (see `body`)."""
        self._continue_pending = True
        return True

    def handle_one_request(self) -> None:
        self._body_read = self._continue_pending = False  # per request, on a kept-alive connection
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):  # a client that disconnects or stalls is not a server error
            self.close_connection = True


def key_from_env() -> str:
    """The endpoint key handed over by `llmops deploy`; removed from the environment once read, and redacted in
    everything this process writes from now on (its log, stages/core/redaction.py)."""
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        raise SystemExit(f"{KEY_ENV} is not set: start this server with `llmops deploy`")
    redaction.register(key)
    redaction.install()
    return key


def announce(server: Server, ready_file: Path) -> None:
    """Tell the parent where this process listens: {pid, started, port} written atomically once the socket is
    bound (`started`: when this process started, which tells it apart from a later one given the same pid)."""
    pid = os.getpid()
    write_json(ready_file, {"pid": pid, "started": started_at(pid), "port": server.server_address[1]})
