"""Target `local`: each deployment a real HTTP server on 127.0.0.1 (stages/deploy/server.py), behind a weighted
router (stages/deploy/router.py) that is the endpoint and writes the production log.

Processes run in the background with their pid files in `.llmops/deploy/<env>/<use_case>/pids/` (`<name>.json`
and `router.json`, each `{pid, started, port}`, written by the process once it listens: a pid file names the
process by its pid and start time, so a recycled pid is never kept or stopped) and their logs in `logs/`. `deploy` is
idempotent: a running server whose config fingerprint and key still match is kept, and a changed split is
applied to the running router without restarting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core import redaction, variants
from stages.core.io import open_log, read_json, write_json
from stages.core.project import RUNTIME_DIR_NAME, load_params
from stages.deploy import endpoint, web
from stages.deploy.spec import Deployment, DeploymentSpec, SpecError
from stages.engine import bake
from stages.llm import connections
from stages.llm.llm_server import runs, started_at, terminate

ROUTER = "router"
START_TIMEOUT_S = 120.0  # a deployment imports prompt flow and loads its flow before it listens


class DeployError(RuntimeError):
    """A local deployment that cannot be started or reached; the message names the process log."""


def runtime(root: Path, env: str, use_case: str) -> Path:
    return root / RUNTIME_DIR_NAME / "deploy" / env / use_case


def production_log(root: Path, env: str, use_case: str) -> Path:
    return runtime(root, env, use_case) / "production.jsonl"


def _pid_file(root: Path, spec: DeploymentSpec, name: str) -> Path:
    return runtime(root, spec.env, spec.use_case) / "pids" / f"{name}.json"


def _option(spec: DeploymentSpec, key: str) -> Any:
    if key not in spec.options:
        raise SpecError(f"conf/deploy/{spec.env}.yaml: missing key targets.local.{key}")
    return spec.options[key]


def limit(spec: DeploymentSpec, key: str) -> int:
    """A size bound of the local endpoint (`targets.local.<key>`): a whole number >= 1."""
    value = _option(spec, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"conf/deploy/{spec.env}.yaml: targets.local.{key} must be a whole number >= 1, got {value!r}")
    return value


def endpoint_key(spec: DeploymentSpec, root: Path) -> str:
    """The endpoint's API key, from the environment variable `targets.local.api_key_env` names (or .env)."""
    name = _option(spec, "api_key_env")
    key = connections.environment(root).get(str(name), "").strip()
    if not key:
        raise SpecError(
            f"conf/deploy/{spec.env}.yaml: targets.local.api_key_env: environment variable {name} is not set "
            "(the endpoint's API key; set it in the environment or in .env)"
        )
    redaction.register(key)
    return key


def fingerprint(spec: DeploymentSpec, deployment: Deployment, params: Mapping[str, Any]) -> str:
    """What a running deployment server must match to be kept: its variant's config, the LLM settings, the flow
    folder's content and the deployment's environment variables."""
    use_case = params["use_cases"][spec.use_case]
    facts = {
        "variant": deployment.variant,
        "config": use_case["variants"][deployment.variant],
        "node_variants": variants.deployed_node_variants(spec.use_case, use_case, deployment.variant),
        "inputs": use_case["data"]["inputs"],
        "llm": params["llm"],
        "row_timeout_s": params["bulk"]["row_timeout_s"],
        "flow": bake.flow_sha256(spec.flow),
        "env_vars": dict(spec.env_vars),
        "max_request_bytes": limit(spec, "max_request_bytes"),
        "observability": dict(spec.observability),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _request(url: str, key: str, method: str = "GET", body: Any = None, timeout_s: float = 5.0) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data, headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def _health(port: int, host: str, key: str) -> dict[str, Any] | None:
    """A local server's /health with our key; None when it does not answer or refuses the key."""
    try:
        return _request(f"http://{host}:{port}/health", key)
    except (OSError, ValueError):
        return None


def _ours(state: Mapping[str, Any]) -> bool:
    """Only the process that wrote a pid file is ours to keep or stop: its pid, started when the file says (a
    recycled pid starts later). A pid file of an earlier version, without the start: a process of our deploy
    modules."""
    if "started" not in state:
        return runs(state["pid"], "stages.deploy.")
    return state["started"] is not None and started_at(state["pid"]) == state["started"]


def _running(pid_file: Path) -> dict[str, Any] | None:
    if not pid_file.is_file():
        return None
    state = read_json(pid_file)
    return state if _ours(state) else None


def _stop(pid_file: Path) -> bool:
    state = _running(pid_file)
    if state:
        terminate(state["pid"])
    pid_file.unlink(missing_ok=True)
    return state is not None


def _spawn(root: Path, module: str, args: list[str], pid_file: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Start `python -m <module>` in the background; wait for its pid file ({pid, port}, written once it listens)."""
    name, log = pid_file.stem, pid_file.parent.parent / "logs" / f"{pid_file.stem}.log"
    pid_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", module, *args, "--ready-file", str(pid_file)]
    with open_log(log) as out:  # the process redacts what it writes there (stages/core/redaction.py)
        process = subprocess.Popen(command, cwd=root, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if pid_file.is_file():
            return read_json(pid_file)
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise DeployError(f"{name} exited with code {process.returncode} at start; {log}:\n  " + "\n  ".join(tail))
        time.sleep(0.1)
    terminate(process.pid)
    raise DeployError(f"{name} did not listen within {START_TIMEOUT_S:.0f} s; see {log}")


def _ensure_deployment(
    root: Path, spec: DeploymentSpec, deployment: Deployment, print_: Any, fp: str, key: str, env: Mapping[str, str]
) -> dict[str, Any]:
    host, pid_file = str(_option(spec, "host")), _pid_file(root, spec, deployment.name)
    running = _running(pid_file)
    if running and (_health(running["port"], host, key) or {}).get("fingerprint") == fp:
        print_(f"  {deployment.name} ({deployment.variant}): unchanged, kept (pid {running['pid']})")
        return running
    if _stop(pid_file):
        print_(f"  {deployment.name}: config changed, restarting")
    args = ["--use-case", spec.use_case, "--deployment", deployment.name, "--variant", deployment.variant,
            "--fingerprint", fp, "--host", host, "--port", "0",
            "--max-body-bytes", str(limit(spec, "max_request_bytes")),
            *observability_args(root, spec, deployment.name)]  # fmt: skip
    started = _spawn(root, "stages.deploy.server", args, pid_file, env)
    print_(f"  {deployment.name} ({deployment.variant}): started on port {started['port']} (pid {started['pid']})")
    return started


def observability_args(root: Path, spec: DeploymentSpec, name: str) -> list[str]:
    """A deployment server's --observability (its block, checked here so a bad one fails the deploy) and --traces."""
    where = f"conf/deploy/{spec.env}.yaml: observability"
    try:
        endpoint.Observability.from_config(spec.observability, where)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    folder = runtime(root, spec.env, spec.use_case)
    config = folder / "observability" / f"{name}.json"
    write_json(config, dict(spec.observability))
    return ["--observability", str(config), "--traces", str(endpoint.trace_file(folder, name))]


def _ensure_router(
    root: Path, spec: DeploymentSpec, backends: dict[str, dict[str, str]], key: str, env: Mapping[str, str],
    print_: Any, shadow: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    host, pid_file = str(_option(spec, "host")), _pid_file(root, spec, ROUTER)
    log = production_log(root, spec.env, spec.use_case)
    limits = {"max_body_bytes": limit(spec, "max_request_bytes"), "log_max_chars": limit(spec, "log_max_chars"),
              "pii": spec.observability.get("pii"), "shadow": shadow}  # fmt: skip
    fp = hashlib.sha256(json.dumps([backends, str(log), limits], sort_keys=True).encode()).hexdigest()[:16]
    running = _running(pid_file)
    if running and (_health(running["port"], host, key) or {}).get("fingerprint") == fp:
        applied = _request(f"http://{host}:{running['port']}/-/weights", key, "PUT", {"weights": spec.weights})
        print_(f"  router: kept on port {running['port']}, split {applied['weights']}")
        return running
    wanted = int(_option(spec, "port")) or (running or (read_json(pid_file) if pid_file.is_file() else {})).get(
        "port", 0
    )  # a configured port, else the port it had, so the endpoint URL survives a redeploy
    _stop(pid_file)
    config = runtime(root, spec.env, spec.use_case) / "router-config.json"
    write_json(config, {"backends": backends, "weights": spec.weights, "log": str(log), "seed": 0,
                        "fingerprint": fp, **limits})  # fmt: skip
    args = ["--config", str(config), "--host", host]
    try:
        started = _spawn(root, "stages.deploy.router", [*args, "--port", str(wanted)], pid_file, env)
    except DeployError:
        if not wanted or int(_option(spec, "port")):
            raise
        started = _spawn(root, "stages.deploy.router", [*args, "--port", "0"], pid_file, env)  # port taken
    print_(f"  router: started on port {started['port']}, split {spec.weights}")
    return started


def deploy(spec: DeploymentSpec, root: Path, print_: Any = print) -> dict[str, Any]:
    """Start (or keep) every deployment's server and the router; returns the record `llmops deploy` saves."""
    key = endpoint_key(spec, root)
    params = load_params(root)
    connections.check_reachable(connections.resolve(params["llm"], connections.environment(root)))
    (runtime(root, spec.env, spec.use_case) / "pids").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env_vars, web.KEY_ENV: key}
    host = str(_option(spec, "host"))
    names = {d.name for d in spec.deployments} | ({spec.shadow.name} if spec.shadow else set())
    for stale in _pid_file(root, spec, ROUTER).parent.glob("*.json"):  # deployments removed from the config
        if stale.stem not in names | {ROUTER} and _stop(stale):
            print_(f"  {stale.stem}: no longer configured, stopped")
    everyone = [*spec.deployments, *([spec.shadow] if spec.shadow else [])]
    servers = {d.name: _ensure_deployment(root, spec, d, print_, fingerprint(spec, d, params), key, env)
               for d in everyone}  # fmt: skip
    backends = {d.name: {"url": f"http://{host}:{servers[d.name]['port']}", "variant": d.variant}
                for d in spec.deployments}  # fmt: skip
    shadow = None
    if spec.shadow:
        shadow = {"name": spec.shadow.name, "variant": spec.shadow.variant,
                  "url": f"http://{host}:{servers[spec.shadow.name]['port']}"}  # fmt: skip
    router = _ensure_router(root, spec, backends, key, env, print_, shadow)
    return {
        "target": "local",
        "url": f"http://{host}:{router['port']}/score",
        "weights": spec.weights,
        "deployments": {
            d.name: {"variant": d.variant, "weight": d.weight, "pid": servers[d.name]["pid"], **backends[d.name]}
            for d in spec.deployments
        },
        **(
            {"shadow": {"variant": spec.shadow.variant, "pid": servers[spec.shadow.name]["pid"], **shadow}}
            if spec.shadow and shadow
            else {}
        ),
        "router": {"pid": router["pid"], "port": router["port"]},
        "log": str(production_log(root, spec.env, spec.use_case).relative_to(root)),
    }


def rollback(spec: DeploymentSpec, root: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """Apply the previous split (`previous["weights"]`) to the running router, live."""
    key = endpoint_key(spec, root)
    router = _running(_pid_file(root, spec, ROUTER))
    if router is None:
        raise DeployError(f"{spec.use_case} is not deployed locally in env {spec.env}: run `llmops deploy` first")
    url = f"http://{_option(spec, 'host')}:{router['port']}/-/weights"
    try:
        applied = _request(url, key, "PUT", {"weights": previous["weights"]})
    except urllib.error.HTTPError as exc:
        raise DeployError(f"the router refused the previous split: {json.loads(exc.read()).get('error')}") from None
    return {**previous, "target": "local", "weights": applied["weights"]}


def stop(root: Path, env: str, use_case: str) -> list[str]:
    """Stop the router and every deployment of the use case; returns the names of those that were running."""
    pids = runtime(root, env, use_case) / "pids"
    return [f.stem for f in sorted(pids.glob("*.json")) if _stop(f)]
