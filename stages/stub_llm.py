"""A tiny OpenAI-compatible LLM stub for tests and offline smoke runs.

Answers /v1/completions and /v1/chat/completions deterministically: the answer is picked from `--answers` by a
hash of the prompt, so the same prompt always gets the same answer and a changed prompt may get another.
`--canned FILE` (a JSON object: prompt substring -> answer) overrides that: a prompt containing a substring
gets its answer verbatim (first match in file order), so a test can script right and wrong answers for chosen
rows. Every request is appended to `--record` (JSON Lines) when given, headers included, so tests can assert
what was sent. Run: `python -m stages.stub_llm --port 0` prints `listening on http://127.0.0.1:PORT/v1`.
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


def pick_answer(prompt: str, answers: tuple[str, ...]) -> str:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return answers[int.from_bytes(digest[:4], "big") % len(answers)]


def make_handler(
    model: str, answers: tuple[str, ...], record: Path | None, canned: dict[str, str] | None = None
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    def answer(prompt: str, lead: str) -> str:
        """The canned answer for the first substring found in the prompt, else `lead` + a hashed pick."""
        found = next((text for key, text in (canned or {}).items() if key in prompt), None)
        return found if found is not None else lead + pick_answer(prompt, answers)

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
                text = answer(prompt, " ")
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                self._send(200, {"id": "cmpl-stub", "object": "text_completion", "created": created,
                                 "model": body.get("model", model), "choices": [choice], "usage": usage})  # fmt: skip
            elif route.endswith("/chat/completions"):
                prompt = json.dumps(body.get("messages", []), sort_keys=True)
                message = {"role": "assistant", "content": answer(prompt, "")}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": created,
                                 "model": body.get("model", model), "choices": [choice], "usage": usage})  # fmt: skip
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

    return Handler


def serve(
    host: str,
    port: int,
    model: str,
    answers: tuple[str, ...],
    record: Path | None,
    canned: dict[str, str] | None = None,
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(model, answers, record, canned))
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--answers", default=",".join(DEFAULT_ANSWERS))
    parser.add_argument("--record", type=Path)
    parser.add_argument("--canned", type=Path, help="JSON object: prompt substring -> answer (verbatim)")
    args = parser.parse_args()
    canned = json.loads(args.canned.read_text(encoding="utf-8")) if args.canned else None
    server = serve(args.host, args.port, args.model, tuple(args.answers.split(",")), args.record, canned)
    print(f"listening on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
