"""The LLM proxy's HTTP side: a threaded server on a free loopback port whose every GET/POST is answered by the
proxy's `handle` (the flows' clients keep their connections alive)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stages.llm.endpoint import Answer

Handle = Callable[[str, str, Mapping[str, str], bytes], Answer]  # method, path, headers, body -> answer


def start(handle: Handle) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve `handle` on 127.0.0.1 (a free port: `server.server_address[1]`) from a daemon thread."""
    server = _Server(("127.0.0.1", 0), _handler(handle))
    # shutdown() waits for the loop's next poll: at the default 0.5 s, every stage would end half a second late.
    serve = functools.partial(server.serve_forever, poll_interval=0.05)
    thread = threading.Thread(target=serve, name="llm-proxy", daemon=True)
    thread.start()
    return server, thread


class _Server(ThreadingHTTPServer):
    """A thread per client connection. The listen backlog is larger than the default 5: with many rows opening
    connections at once, a full backlog drops connection attempts, which clients retry only after a second."""

    daemon_threads = True
    request_queue_size = 128


def _handler(handle: Handle) -> type[BaseHTTPRequestHandler]:
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
            answer = handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            if answer.give_up:
                self.send_header("x-should-retry", "false")
            self.end_headers()
            self.wfile.write(answer.body)

        do_POST = do_GET = _serve

    return Handler
