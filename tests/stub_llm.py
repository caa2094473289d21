"""A tiny OpenAI-compatible LLM stub for tests and offline smoke runs.

Answers /v1/completions and /v1/chat/completions deterministically: the answer is picked from `--answers` by a
hash of the prompt, so the same prompt always gets the same answer and a changed prompt may get another. At
temperature > 0 the hash also covers the repeat index the LLM proxy sends (`X-LLMOps-Repeat`), so each repeat
of a row samples its own answer, as a real model would (repeat 0 answers as at temperature 0).
`--rules FILE` (a JSON object {substring: answer}, re-read on every request, may appear later) answers any
prompt containing a substring with its answer verbatim (first match in file order), so a test can script exact
answers, e.g. a runnable program or a judge score.
Every request is appended to `--record` (JSON Lines) when given, headers included, with the time it was received
and how many requests were being answered at that moment (itself included), so tests can assert what was sent
and how many requests overlapped. It answers requests concurrently (a thread per connection).
Run: `python tests/stub_llm.py --port 0` prints `listening on http://127.0.0.1:PORT/v1`.

Faults, for the retry and timeout tests (see `Faults`): `--fail-first N --status 429 --retry-after 1` answers
the first N requests with an error, `--fail-rate P` always fails a fixed share P of the prompts, `--drop` makes
those failures dropped connections (closed without an answer), `--delay-s D` slows every answer down, and
`--match S` limits all of these to prompts containing S; `--message M` is the failure's error message.
`--reject-null-params` answers a request with a null presence_penalty or frequency_penalty as llama.cpp does
(HTTP 500, "argument 4: TypeError: wrong type", naming no parameter). `--echo-key-status 401` answers every
(matching) request with that status and the request's API key in the error message, as OpenAI and gateways do
for a wrong key ("Incorrect API key provided: sk-..."). `--faults FILE` (JSON with the fields of `Faults`, re-read
on every request) replaces them while it exists; the first-N count restarts whenever the faults change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ANSWERS = ("Academic", "App", "Movie", "News", "Recipe", "Shopping", "Sports", "Travel", "Video", "banana")


def pick_answer(
    prompt: str, answers: tuple[str, ...], rules: dict[str, str] | None = None, lead: str = "", sample: int = 0
) -> str:
    """The scripted answer of the first rule whose substring is in `prompt` (verbatim), else `lead` + one of
    `answers` by hash (of the prompt, and of `sample` when it is not 0)."""
    for substring, answer in (rules or {}).items():
        if substring in prompt:
            return answer
    digest = hashlib.sha256(prompt.encode("utf-8") + (f"\0sample {sample}".encode() if sample else b"")).digest()
    return lead + answers[int.from_bytes(digest[:4], "big") % len(answers)]


def read_rules(path: Path | None) -> dict[str, str]:
    """The scripted answers in `path` (none when there is no such file yet)."""
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


# What llama.cpp's server answers (HTTP 500) to a request whose frequency_penalty is null (llama-cpp-python 0.3.36).
LLAMA_CPP_NULL_ERROR = "argument 4: TypeError: wrong type"
NULL_REJECTED = ("presence_penalty", "frequency_penalty")


@dataclass(frozen=True)
class Faults:
    """Injected faults. A failing request gets `status` (with `Retry-After: retry_after` when set), or, with
    `drop`, a connection closed without an answer. With `echo_key_status`, every matching request fails with that
    status and the key it sent echoed in the error message."""

    fail_first: int = 0  # the first N matching requests fail
    fail_rate: float = 0.0  # this share of the matching prompts (picked by hash) always fails
    status: int = 500
    retry_after: float | None = None
    drop: bool = False
    delay_s: float = 0.0  # every matching answer (or failure) is sent this late
    match: str = ""  # only prompts containing this substring are affected ("" = all)
    echo_key_status: int | None = None  # e.g. 401: "Incorrect API key provided: <the key>"
    message: str = ""  # the failure's error message ("" = "stub fault: HTTP <status>")
    reject_null_params: bool = False  # a null penalty fails with llama.cpp's 500, whatever the other fields say

    @classmethod
    def from_json(cls, path: Path | None, default: Faults) -> Faults:
        if path is None or not path.is_file():
            return default
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def reply_json(
    handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None
) -> None:
    """Answer the request `handler` holds with `body` as JSON (the stub's, and the tests' in-process stand-ins')."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _fails_by_rate(prompt: str, rate: float) -> bool:
    digest = hashlib.sha256(b"fail:" + prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


def make_handler(
    model: str,
    answers: tuple[str, ...],
    record: Path | None,
    rules: Path | None = None,
    faults: Faults = Faults(),
    faults_file: Path | None = None,
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    # The faults in force, how many requests they have matched, and how many requests are being answered.
    state: dict[str, Any] = {"faults": None, "matched": 0, "in_flight": 0}

    def fault_for(prompt: str) -> tuple[Faults, bool]:
        """The faults in force for this request and whether it fails."""
        with lock:
            current = Faults.from_json(faults_file, faults)
            if current != state["faults"]:
                state.update(faults=current, matched=0)
            if current.match not in prompt:
                return Faults(), False
            state["matched"] += 1
            fails = state["matched"] <= current.fail_first or _fails_by_rate(prompt, current.fail_rate)
            return current, fails or current.echo_key_status is not None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # see llm_proxy's handler

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/stub/in-flight":  # tests: answers still being held (e.g. by a delay)
                with lock:
                    reply_json(self, 200, {"in_flight": state["in_flight"]})
            elif urlsplit(self.path).path.rstrip("/").endswith("/models"):
                reply_json(
                    self, 200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stub"}]}
                )
            else:
                reply_json(self, 404, {"error": {"message": f"no route {self.path}"}})

        def _sent_key(self) -> str:
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            return self.headers.get("api-key") or bearer

        def _fail(self, fault: Faults) -> None:
            if fault.drop:  # close the connection without an answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            message = fault.message or f"stub fault: HTTP {fault.status}"
            status, error = fault.status, {"message": message, "type": "stub_fault"}
            if fault.echo_key_status is not None:  # OpenAI's own wording for a wrong key
                status = fault.echo_key_status
                error = {"message": f"Incorrect API key provided: {self._sent_key()}. You can find your API key at "
                         "https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                         "code": "invalid_api_key"}  # fmt: skip
            retry_after = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            reply_json(self, status, {"error": error}, retry_after)

        def do_POST(self) -> None:
            with lock:
                state["in_flight"] += 1
                in_flight = state["in_flight"]
            try:
                self._answer(time.time(), in_flight)
            finally:
                with lock:
                    state["in_flight"] -= 1

        def _answer(self, received: float, in_flight: int) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            route = urlsplit(self.path).path
            chat = route.endswith("/chat/completions")
            prompt = body.get("prompt", "")
            prompt = json.dumps(body.get("messages", []), sort_keys=True) if chat else (
                prompt if isinstance(prompt, str) else "".join(prompt))  # fmt: skip
            fault, fails = fault_for(prompt)
            current = Faults.from_json(faults_file, faults)
            if current.reject_null_params and any(body.get(k, 0) is None for k in NULL_REJECTED):
                fault, fails = Faults(status=500, message=LLAMA_CPP_NULL_ERROR), True
            if record is not None:
                with lock, record.open("a", encoding="utf-8") as handle:
                    entry = {"path": self.path, "headers": dict(self.headers), "body": body,
                             "fault": ("drop" if fault.drop else fault.echo_key_status or fault.status)
                                      if fails else None,
                             "received": received, "in_flight": in_flight,
                             "client_port": self.client_address[1]}  # fmt: skip
                    handle.write(json.dumps(entry) + "\n")
            # The delay counts from the request's arrival: parsing and recording are part of it, not added to it.
            time.sleep(max(0.0, fault.delay_s - (time.time() - received)))
            if fails:
                return self._fail(fault)
            if not route.endswith("/completions"):
                return reply_json(self, 404, {"error": {"message": f"no route {self.path}"}})
            sample = int(self.headers.get("X-LLMOps-Repeat") or 0) if (body.get("temperature") or 0) > 0 else 0
            answer = pick_answer(prompt, answers, read_rules(rules), lead="" if chat else " ", sample=sample)
            # Token counts: words, so that tests can tell requests apart in the usage sums.
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(answer.split())}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            common = {"created": int(time.time()), "model": body.get("model", model), "usage": usage}
            if chat:
                message = {"role": "assistant", "content": answer}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                reply_json(
                    self, 200, {"id": "chatcmpl-stub", "object": "chat.completion", "choices": [choice], **common}
                )
            else:
                choice = {"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}
                reply_json(self, 200, {"id": "cmpl-stub", "object": "text_completion", "choices": [choice], **common})

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once (the default backlog, 5, drops connections)


def serve(
    host: str,
    port: int,
    model: str,
    answers: tuple[str, ...],
    record: Path | None,
    rules: Path | None = None,
    faults: Faults = Faults(),
    faults_file: Path | None = None,
) -> ThreadingHTTPServer:
    return _Server((host, port), make_handler(model, answers, record, rules, faults, faults_file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--answers", default=",".join(DEFAULT_ANSWERS))
    parser.add_argument("--record", type=Path)
    parser.add_argument("--rules", type=Path, help="JSON object {substring: answer} of scripted answers")
    parser.add_argument("--fail-first", type=int, default=0, help="the first N (matching) requests fail")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="this share of the prompts always fails")
    parser.add_argument("--status", type=int, default=500, help="HTTP status of a failure (default 500)")
    parser.add_argument("--retry-after", type=float, help="Retry-After seconds sent with a failure")
    parser.add_argument("--drop", action="store_true", help="fail by closing the connection without an answer")
    parser.add_argument("--delay-s", type=float, default=0.0, help="answer every (matching) request this late")
    parser.add_argument("--match", default="", help="faults apply only to prompts containing this substring")
    parser.add_argument("--echo-key-status", type=int, help="fail with this status, echoing the key sent")
    parser.add_argument("--message", default="", help="the error message of a failure")
    parser.add_argument("--reject-null-params", action="store_true", help="a null penalty fails as on llama.cpp")
    parser.add_argument("--faults", type=Path, help="JSON of the fault options, re-read on every request")
    args = parser.parse_args()
    faults = Faults(fail_first=args.fail_first, fail_rate=args.fail_rate, status=args.status,
                    retry_after=args.retry_after, drop=args.drop, delay_s=args.delay_s, match=args.match,
                    echo_key_status=args.echo_key_status, message=args.message,
                    reject_null_params=args.reject_null_params)  # fmt: skip
    server = serve(
        args.host, args.port, args.model, tuple(args.answers.split(",")), args.record, args.rules, faults, args.faults
    )
    print(f"listening on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
