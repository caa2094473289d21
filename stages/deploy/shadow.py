"""Shadow deployments: a candidate that gets a copy of live traffic and whose answers are never returned.

`conf/deploy/<env>.yaml`:
    shadow: {name: candidate, variant: v3}   # null: no shadow
The router answers each request from a live deployment as before, then hands the same body (and request id) to
`Shadow.mirror`: a bounded queue and one worker thread call the shadow deployment, so a slow or failing candidate
never delays or changes a live answer (when the queue is full the copy is dropped and counted). Both answers go to
the production log (redacted), the shadow's with `"shadow": true`, under the same `request_id`:
`llmops evaluate-production` pairs them (stages/deploy/production.py) for the candidate's verdict against live.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 256


@dataclass
class Shadow:
    """Mirrors live requests to one shadow deployment; `log` writes the shadow's record."""

    name: str
    url: str
    variant: str
    send: Callable[[str, bytes, str], tuple[int, bytes, dict[str, Any]]]  # (url, body, request id) -> answer
    log: Callable[[dict[str, Any]], None]
    dropped: int = 0
    mirrored: int = 0
    _queue: queue.Queue[tuple[dict[str, Any], bytes] | None] = field(default_factory=lambda: queue.Queue(QUEUE_SIZE))
    _thread: threading.Thread | None = None

    def start(self) -> Shadow:
        self._thread = threading.Thread(target=self._work, name=f"shadow-{self.name}", daemon=True)
        self._thread.start()
        return self

    def mirror(self, record: Mapping[str, Any], raw: bytes) -> None:
        """Queue a copy of a live request (its log record's request id, time and inputs, and its raw body)."""
        try:
            self._queue.put_nowait((dict(record), raw))
        except queue.Full:
            self.dropped += 1

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the queued copies (up to `timeout_s`), then end the worker."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            record, raw = item
            started = time.perf_counter()
            status, data, meta = self.send(self.url, raw, record["request_id"])
            self.mirrored += 1
            self.log({"record": record, "raw": raw, "status": status, "data": data, "meta": meta, "name": self.name,
                      "variant": self.variant, "latency_s": round(time.perf_counter() - started, 4)})  # fmt: skip
