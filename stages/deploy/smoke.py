"""`llmops smoke`: call an endpoint with the use case's sample request and check the answer, failing loudly."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from stages.deploy.web import DEPLOYMENT_HEADER

# Prompt flow's declared output types -> the JSON values that satisfy them.
_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "bool": (bool,), "int": (int,), "double": (int, float),
                                       "float": (int, float), "list": (list,), "object": (dict,)}  # fmt: skip


def problems(
    status: int, headers: Mapping[str, str], body: Any, outputs: Mapping[str, str | None], deployments: Sequence[str]
) -> list[str]:
    """What is wrong with an endpoint's answer: status, the declared outputs and their types, the deployment header."""
    if status != 200:
        detail = body.get("error") if isinstance(body, dict) else body
        return [f"status {status} (expected 200): {detail}"]
    found = []
    if not isinstance(body, dict):
        return [f"the answer is not a JSON object of the flow's outputs: {str(body)[:200]}"]
    if missing := [name for name in outputs if name not in body]:
        found.append(f"missing output {', '.join(missing)} (the flow declares {', '.join(outputs)})")
    for name, declared in outputs.items():
        wanted = _TYPES.get(declared or "")
        value = body.get(name)
        if name in body and wanted and (not isinstance(value, wanted) or (bool not in wanted and value is True)):
            found.append(f"output {name} should be a {declared}, got {type(value).__name__} {repr(value)[:80]}")
    served = headers.get(DEPLOYMENT_HEADER)
    if served not in deployments:
        found.append(f"header {DEPLOYMENT_HEADER} is {served!r}, not one of the deployments {', '.join(deployments)}")
    return found


def call(url: str, key: str, payload: Any, timeout_s: float) -> tuple[int, dict[str, str], Any, float]:
    """POST `payload` to `url` with the key; returns status, headers, parsed body and latency (s)."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json",
                                                                         "Authorization": f"Bearer {key}"})  # fmt: skip
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    latency = time.perf_counter() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return status, {k.lower(): v for k, v in headers.items()}, body, latency
