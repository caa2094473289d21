"""Real OTLP receivers for the tests, on free ports of 127.0.0.1: Arize Phoenix (`make phoenix` installs it in
.venv-phoenix: its OpenTelemetry packages are newer than prompt flow allows in .venv), queried through its REST API."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, stop_process

PHOENIX = REPO / ".venv-phoenix" / "bin" / "phoenix"
START_TIMEOUT_S = 240  # migrations and imports: about a minute on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Phoenix:
    url: str  # OTLP/HTTP base: set OTEL_EXPORTER_OTLP_ENDPOINT to it

    def spans(self, project: str, limit: int = 1000) -> list[dict]:
        """Every span Phoenix stored for `project` (its REST API, newest first)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/projects/{project}/spans?limit={limit}", timeout=10) as r:
                return json.loads(r.read())["data"]
        except urllib.error.HTTPError as error:
            if error.code == 404:  # no span of that project yet
                return []
            raise

    def wait_for(self, project: str, count: int, timeout_s: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans(project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.5)


@contextlib.contextmanager
def phoenix(folder: Path) -> Iterator[Phoenix]:
    """Phoenix serving OTLP/HTTP and its UI on a free port, storing into `folder`; stopped afterwards."""
    if not PHOENIX.is_file():
        raise RuntimeError(f"{PHOENIX} is missing: run `make phoenix` (the tests' OTLP backend)")
    port, grpc = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(folder), "PHOENIX_PORT": str(port), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_TELEMETRY_ENABLED": "false", "DO_NOT_TRACK": "1"}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "phoenix.log").open("w")
    process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Phoenix did not start; see {folder / 'phoenix.log'}")
            time.sleep(1)
        yield Phoenix(url)
    finally:
        stop_process(process)
        log.close()
