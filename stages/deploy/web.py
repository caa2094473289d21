"""HTTP plumbing shared by the local deployment servers and the router: JSON bodies, API-key auth, ready files."""

from __future__ import annotations

import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stages.core.io import write_json

# The response header naming the deployment that answered (the name Azure ML managed endpoints use).
DEPLOYMENT_HEADER = "azureml-model-deployment"
KEY_ENV = "LLMOPS_DEPLOY_KEY"  # how a server process receives the endpoint key from `llmops deploy` (env only)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent clients must not be refused at accept


class JSONHandler(BaseHTTPRequestHandler):
    """A handler that speaks JSON, checks `Authorization: Bearer <key>` and never logs requests."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no wait for the client's delayed ACK
    api_key = ""  # set on a subclass by the process that serves

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
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.reply_bytes(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers)

    def reply_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def key_from_env() -> str:
    """The endpoint key handed over by `llmops deploy`; removed from the environment once read."""
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        raise SystemExit(f"{KEY_ENV} is not set: start this server with `llmops deploy`")
    return key


def announce(server: Server, ready_file: Path) -> None:
    """Tell the parent where this process listens: {pid, port} written atomically once the socket is bound."""
    write_json(ready_file, {"pid": os.getpid(), "port": server.server_address[1]})
