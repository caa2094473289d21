"""A baked flow's Docker build context, made by prompt flow (`pf flow build --format docker`) in a child process."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.io import write_text
from stages.engine.bake import flow_sha256, llm_connection_yaml
from stages.engine.promptflow import environment


def build_docker_context(flow: Path, llm: Mapping[str, Any], out: Path, timeout_s: float = 600) -> Path:
    """`pf flow build --format docker` of `flow` into `out` (Dockerfile, flow/, connections/, start.sh, runit/).

    The build runs in a child process with a throwaway HOME: prompt flow exports the connections a DAG flow uses
    from its connection store, which must live under HOME, so the `llm` connection is created there first with a
    placeholder key. The exported connection holds `${env:LLM_API_KEY}`, never a value.
    """
    # A context built from the same baked flow, connection and prompt flow is kept: a redeploy that changes only
    # the traffic split starts no build (each takes seconds: a child process importing prompt flow's SDK).
    dag = (flow / "flow.dag.yaml").is_file()
    facts = {"flow": flow_sha256(flow), "connection": llm_connection_yaml(llm) if dag else None,
             "promptflow": importlib.metadata.version("promptflow"), "python": list(sys.version_info[:2])}  # fmt: skip
    stamp, fingerprint = out.with_name(f"{out.name}.build.json"), json.dumps(facts, sort_keys=True)
    if out.is_dir() and stamp.is_file() and stamp.read_text(encoding="utf-8") == fingerprint:
        return out
    stamp.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="llmops-pf-build-") as home:
        connection = Path(home) / "llm.yaml"
        if dag:
            placeholder = {**llm_connection_yaml(llm), "api_key": "placeholder-set-LLM_API_KEY-at-run-time"}
            connection.write_text(yaml.safe_dump(placeholder), encoding="utf-8")
        env = {**os.environ, "HOME": home, "XDG_DATA_HOME": str(Path(home) / "xdg")}
        env.pop("PF_HOME_DIRECTORY", None)
        command = [
            sys.executable,
            "-m",
            "stages.engine.promptflow.docker",
            str(flow.resolve()),
            str(out.resolve()),
            str(connection),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"pf flow build --format docker failed for {flow}:\n{tail}")
    _pin_python(out / "Dockerfile")
    write_text(stamp, fingerprint)
    return out


_TEMPLATE_PYTHON = "python=3.9.16"  # what the Dockerfile of prompt flow 1.18's `pf flow build` installs


def _pin_python(dockerfile: Path) -> None:
    """The image runs the Python this project runs: the flows' code and the vendored modules need 3.10+ (`X | Y`
    annotations evaluated at import), and prompt flow's template installs 3.9."""
    text = dockerfile.read_text(encoding="utf-8")
    if text.count(_TEMPLATE_PYTHON) != 1:
        raise RuntimeError(f"{dockerfile}: expected one {_TEMPLATE_PYTHON!r} (prompt flow's template) to replace")
    wanted = f"python={sys.version_info.major}.{sys.version_info.minor}"
    dockerfile.write_text(text.replace(_TEMPLATE_PYTHON, wanted), encoding="utf-8")


def _build(flow: Path, out: Path, connection: Path) -> None:
    """The promptflow calls of `build_docker_context`, in its child process (prompt flow reads its home at import)."""
    environment.configure(Path.home())
    from promptflow._sdk._load_functions import load_connection
    from promptflow.client import PFClient

    client = PFClient()
    if connection.is_file():
        client.connections.create_or_update(load_connection(connection))
    client.flows.build(flow, output=out, format="docker")


if __name__ == "__main__":
    _build(*(Path(arg) for arg in sys.argv[1:4]))
