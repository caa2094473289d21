"""A tiny OpenAI-compatible LLM stub for tests and offline smoke runs.

Answers /v1/completions and /v1/chat/completions deterministically: the answer is picked from `--answers` by a
hash of the prompt, so the same prompt always gets the same answer and a changed prompt may get another.
`--rules FILE` (a JSON object {substring: answer}, re-read on every request, may appear later) answers any
prompt containing a substring with its answer verbatim (first match in file order), so a test can script exact
answers, e.g. a runnable program or a judge score.
Every request is appended to `--record` (JSON Lines) when given, headers included, so tests can assert what
was sent. Run: `python -m stages.stub_llm --port 0` prints `listening on http://127.0.0.1:PORT/v1`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ANSWERS = ("Academic", "App", "Movie", "News", "Recipe", "Shopping", "Sports", "Travel", "Video", "banana")


def pick_answer(prompt: str, answers: tuple[str, ...], rules: dict[str, str] | None = None, lead: str = "") -> str:
    """The scripted answer of the first rule whose substring is in `prompt` (verbatim), else `lead` + one of
    `answers` by hash."""
    for substring, answer in (rules or {}).items():
        if substring in prompt:
            return answer
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return lead + answers[int.from_bytes(digest[:4], "big") % len(answers)]


def read_rules(path: Path | None) -> dict[str, str]:
    """The scripted answers in `path` (none when there is no such file yet)."""
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def make_handler(
    model: str, answers: tuple[str, ...], record: Path | None, rules: Path | None = None
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if urlsplit(self.path).path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stub"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if record is not None:
                with lock, record.open("a", encoding="utf-8") as handle:
                    entry = {"path": self.path, "headers": dict(self.headers), "body": body}
                    handle.write(json.dumps(entry) + "\n")
            route = urlsplit(self.path).path
            created = int(time.time())
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            if route.endswith("/completions") and not route.endswith("/chat/completions"):
                prompt = body.get("prompt", "")
                prompt = prompt if isinstance(prompt, str) else "".join(prompt)
                text = pick_answer(prompt, answers, read_rules(rules), lead=" ")
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                self._send(200, {"id": "cmpl-stub", "object": "text_completion", "created": created,
                                 "model": body.get("model", model), "choices": [choice], "usage": usage})  # fmt: skip
            elif route.endswith("/chat/completions"):
                prompt = json.dumps(body.get("messages", []), sort_keys=True)
                message = {"role": "assistant", "content": pick_answer(prompt, answers, read_rules(rules))}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": created,
                                 "model": body.get("model", model), "choices": [choice], "usage": usage})  # fmt: skip
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

    return Handler


def serve(
    host: str, port: int, model: str, answers: tuple[str, ...], record: Path | None, rules: Path | None = None
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(model, answers, record, rules))
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--answers", default=",".join(DEFAULT_ANSWERS))
    parser.add_argument("--record", type=Path)
    parser.add_argument("--rules", type=Path, help="JSON object {substring: answer} of scripted answers")
    args = parser.parse_args()
    server = serve(args.host, args.port, args.model, tuple(args.answers.split(",")), args.record, args.rules)
    print(f"listening on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
