"""The local endpoint: a weighted router in front of a use case's local deployments, with the production log.

Each `POST /score` goes to one deployment picked at random by weight (seeded, so a restart replays the same
sequence; random rather than round-robin so that periodic traffic cannot line up with the split), is answered
with the deployment's status and body plus the header `azureml-model-deployment`, and is appended to the
production log as one JSON line (time, deployment, variant, status, latency, inputs, outputs or error; never
headers; every string cut to `log_max_chars`; the endpoint key is redacted should a client put it in a body).
`PUT /-/weights` changes the split live (`llmops deploy`, `llmops rollback`); `GET /health` shows it. All routes
need the endpoint key, checked before any of the body is read; bodies above `max_body_bytes` are refused (413).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stages.core import redaction
from stages.core.io import read_json
from stages.deploy import endpoint, shadow, web
from stages.observability import pii


class WeightError(ValueError):
    """A traffic split that cannot be applied; the message says why."""


def check_weights(weights: Any, known: set[str]) -> dict[str, int]:
    """A valid split: integer percents of known deployments that sum to 100."""
    if not isinstance(weights, Mapping) or not weights:
        raise WeightError(f"weights must be an object {{deployment: percent}}, got {weights!r}")
    if unknown := sorted(set(weights) - known):
        raise WeightError(f"unknown deployment {', '.join(unknown)} (deployed: {', '.join(sorted(known))})")
    bad = {name: w for name, w in weights.items() if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 100}
    if bad:
        raise WeightError(f"weights must be integer percents from 0 to 100, got {bad}")
    if sum(weights.values()) != 100:
        raise WeightError(f"weights must sum to 100, got {sum(weights.values())}")
    return {str(name): int(w) for name, w in weights.items()}


class Split:
    """The live traffic split: a seeded weighted pick per request, replaceable while serving."""

    def __init__(self, weights: Mapping[str, int], known: set[str], seed: int) -> None:
        self.known = known
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.weights = check_weights(weights, known)

    def set(self, weights: Any) -> dict[str, int]:
        checked = check_weights(weights, self.known)
        with self._lock:
            self.weights = checked
        return checked

    def pick(self) -> str:
        with self._lock:
            names = [name for name, weight in self.weights.items() if weight > 0]
            return self._rng.choices(names, [self.weights[name] for name in names])[0]


CONTENT_FIELDS = ("inputs", "outputs", "error")  # what users and the flow wrote: the PII redactor's input


class ProductionLog:
    """Appends one JSON line per request: a single write on an O_APPEND descriptor, so lines never interleave.
    Personal data is redacted first (`redactor`: the deployment's `observability.pii`), then secrets."""

    def __init__(self, path: Path, redactor: pii.Redactor = pii.DEFAULT) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.redactor = path, redactor
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, record: Mapping[str, Any]) -> None:
        content = {k: self.redactor.redact_value(v) for k, v in record.items() if k in CONTENT_FIELDS}
        line = redaction.redact(json.dumps({**record, **content}, ensure_ascii=False)) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (disk full, signal): finish the line
                written += os.write(self._fd, data[written:])


def bounded(value: Any, max_chars: int) -> Any:
    """`value` (parsed JSON) with every string longer than `max_chars` cut to that length, marked with how much
    was cut: what one request can add to the production log is bounded."""
    if isinstance(value, str):
        return value if len(value) <= max_chars else f"{value[:max_chars]}... [{len(value) - max_chars} chars cut]"
    if isinstance(value, dict):
        return {bounded(str(k), max_chars): bounded(v, max_chars) for k, v in value.items()}
    if isinstance(value, list):
        return [bounded(item, max_chars) for item in value]
    return value


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def forward(url: str, body: bytes, key: str, timeout_s: float, request_id: str = "") -> tuple[int, bytes, dict]:
    """POST `body` to a deployment's /score with the request id; its status, body and the meta it sent (guardrail
    flags, LLM usage, fallbacks); a deployment that cannot be reached is a 502."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}",
                   endpoint.REQUEST_ID_HEADER: request_id}  # fmt: skip
        connection.request("POST", "/score", body, headers)
        response = connection.getresponse()
        try:
            meta = json.loads(response.getheader(endpoint.META_HEADER) or "{}")
        except ValueError:
            meta = {}
        return response.status, response.read(), meta
    except OSError as exc:
        return 502, json.dumps({"error": f"deployment unreachable: {type(exc).__name__}: {exc}"}).encode(), {}
    finally:
        connection.close()


def answered(record: Mapping[str, Any], name: str, variant: str, status: int, data: bytes, meta: Mapping[str, Any],
             latency_s: float, raw: bytes, max_chars: int, secret: str) -> dict[str, Any]:  # fmt: skip
    """The production log line of a request a deployment answered (live or shadow); `inputs_key` joins it to the
    dataset once its inputs are redacted (pii.join_key, keyed with `secret`)."""
    body, inputs = _decoded(data), _decoded(raw)
    line = {**record, "deployment": name, "variant": variant, "status": status, "latency_s": round(latency_s, 4),
            "inputs": bounded(inputs, max_chars), "inputs_key": pii.join_key(inputs, secret),
            **{k: v for k, v in meta.items() if k != "llm"}}  # fmt: skip
    if isinstance(meta.get("llm"), Mapping):
        line["llm"] = dict(meta["llm"])
    if status == 200:
        line["outputs"] = bounded(body, max_chars)
    else:
        line["error"] = bounded(body.get("error") if isinstance(body, dict) else body, max_chars)
    return line


@dataclass
class Router:
    """What the router serves with: its backends and split, the production log, the shadow (if any), the key."""

    config: dict[str, Any]
    key: str
    split: Split
    log: ProductionLog
    timeout_s: float
    max_chars: int
    mirror: shadow.Shadow | None = None

    @property
    def backends(self) -> dict[str, dict[str, str]]:
        return self.config["backends"]

    @classmethod
    def from_config(cls, config: dict[str, Any], key: str | None) -> Router:
        split = Split(config["weights"], set(config["backends"]), int(config.get("seed", 0)))
        log = ProductionLog(Path(config["log"]), pii.Redactor.from_config(config.get("pii"), "observability.pii"))
        log.redactor.redact_text("Warm up, Jane Doe.")  # loads the PII detector (Presidio: seconds) before listening
        router = cls(config, key, split, log, float(config.get("timeout_s", 330)), int(config["log_max_chars"]))
        if shadow_config := config.get("shadow"):
            router.mirror = shadow.Shadow(shadow_config["name"], shadow_config["url"], shadow_config["variant"],
                                          router.send, router.shadow_log).start()  # fmt: skip
        return router

    def send(self, url: str, raw: bytes, request_id: str) -> tuple[int, bytes, dict]:
        return forward(url, raw, self.key, self.timeout_s, request_id)

    def shadow_log(self, item: dict[str, Any]) -> None:
        self.log.append({**answered(item["record"], item["name"], item["variant"], item["status"], item["data"],
                                    item["meta"], item["latency_s"], item["raw"], self.max_chars, self.key),
                         "shadow": True})  # fmt: skip

    def health(self) -> dict[str, Any]:
        mirror = self.mirror
        shadowed = {"name": mirror.name, "mirrored": mirror.mirrored, "dropped": mirror.dropped} if mirror else None
        return {"weights": self.split.weights, "backends": self.backends, "shadow": shadowed,
                "fingerprint": self.config.get("fingerprint")}  # fmt: skip

    def score(self, raw: bytes, record: dict[str, Any]) -> tuple[str, int, bytes, dict]:
        """Send a request to the backend the split picks: its name, and the status, body and meta it answered."""
        name = self.split.pick()
        return name, *self.send(self.backends[name]["url"], raw, record["request_id"])

    def answered(self, record: dict[str, Any], name: str, answer: tuple[int, bytes, dict], raw: bytes,
                 started: float) -> None:  # fmt: skip
        """Log an answered request (and mirror it to the shadow)."""
        status, data, meta = answer
        self.log.append(answered(record, name, self.backends[name]["variant"], status, data, meta,
                                 time.perf_counter() - started, raw, self.max_chars, self.key))  # fmt: skip
        if self.mirror is not None:
            self.mirror.mirror(record, raw)


def _handler(router: Router) -> type[web.JSONHandler]:
    class Handler(web.JSONHandler):
        api_key = router.key
        max_body_bytes = int(router.config["max_body_bytes"])

        def do_GET(self) -> None:
            if self.path != "/health":
                self.reply(404, {"error": f"no route {self.path}; POST /score, GET /health, PUT /-/weights"})
            elif self.authorized():
                self.reply(200, router.health())

        def do_PUT(self) -> None:
            if self.path != "/-/weights":
                self.reply(404, {"error": f"no route {self.path}; PUT /-/weights"})
            elif self.authorized():
                try:
                    self.reply(200, {"weights": router.split.set(json.loads(self.body() or b"null").get("weights"))})
                except web.BodyError as exc:
                    self.reply(exc.status, {"error": str(exc)})
                except (ValueError, AttributeError, WeightError) as exc:
                    self.reply(400, {"error": str(exc)})

        def do_POST(self) -> None:
            started = time.perf_counter()
            record: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                      "request_id": uuid.uuid4().hex, "path": bounded(self.path, 200),
                                      "deployment": None, "variant": None, "inputs": None}  # fmt: skip

            def refused(status: int, error: str) -> None:  # answered (or not) already; logged without a body
                router.log.append({**record, "status": status, "latency_s": round(time.perf_counter() - started, 4),
                                   "error": error})  # fmt: skip

            if self.path != "/score":
                self.reply(404, {"error": f"no route {self.path}; POST /score"})
                return refused(404, "no route")
            if not self.authorized():
                return refused(401, "unauthorized")
            try:
                raw = self.body()
            except web.BodyError as exc:
                self.reply(exc.status, {"error": str(exc)})
                return refused(exc.status, str(exc))
            name, status, data, meta = router.score(raw, record)
            self.reply_bytes(status, data, {web.DEPLOYMENT_HEADER: name})
            router.answered(record, name, (status, data, meta), raw, started)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    shape = "JSON: {backends: {name: {url, variant}}, weights, log, seed, timeout_s, fingerprint, max_body_bytes, "
    shape += "log_max_chars}"
    parser.add_argument("--config", type=Path, required=True, help=shape)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, required=True, help="{pid, started, port}, once listening")
    args = parser.parse_args(argv)
    key = web.key_from_env()
    router = Router.from_config(read_json(args.config), key)
    server = web.Server((args.host, args.port), _handler(router))
    web.announce(server, args.ready_file)
    print(f"router on http://{args.host}:{server.server_address[1]}: {router.split.weights}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
