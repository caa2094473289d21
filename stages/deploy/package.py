"""What the cloud targets ship: a use case's flow with one variant baked in, its content hash, and the Docker
build context prompt flow makes from it.

A served flow cannot be told which variant to run (prompt flow's serving app knows nothing of our variants), so
each deployment gets a copy of the flow folder in which the variant's prompt, params and node inputs are the
flow's own values. The copy is deterministic: the same flow and variant give the same bytes, hence the same hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core import flow_engine
from stages.core.connections import Connection
from stages.core.project import runtime_dir
from stages.deploy.spec import Deployment, DeploymentSpec

_SKIPPED_DIRS = {"__pycache__", ".promptflow"}


def flow_sha256(flow: Path) -> str:
    """SHA-256 over the sorted relative paths and bytes of a flow folder's files (or of one .prompty file),
    leaving out __pycache__ and .promptflow (prompt flow's own scratch files)."""
    files = [flow] if flow.is_file() else sorted(_flow_files(flow))
    digest = hashlib.sha256()
    for file in files:
        relative = file.name if flow.is_file() else file.relative_to(flow).as_posix()
        data = file.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _flow_files(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not _SKIPPED_DIRS.intersection(path.relative_to(folder).parts)
    ]


def deployment_env(spec: DeploymentSpec, deployment: Deployment) -> dict[str, str]:
    """Environment variables of one deployment: the configured ones, then which use case, deployment and variant
    it serves (so logs and responses can name them)."""
    return {
        **spec.env_vars,
        "LLMOPS_USE_CASE": spec.use_case,
        "LLMOPS_DEPLOYMENT": deployment.name,
        "LLMOPS_VARIANT": deployment.variant,
    }


def stable_deployment(spec: DeploymentSpec) -> Deployment:
    """The deployment that takes the traffic the others do not: the first prior deployment with traffic (else the
    first prior one; the new one when it is alone). Targets that route by "the rest goes to X" route to it."""
    new, prior = spec.deployments[0], spec.deployments[1:]
    return next((d for d in prior if d.weight > 0), prior[0] if prior else new)


def bake_variant(flow: Path, block: Mapping[str, Any], llm: Mapping[str, Any], dest: Path) -> Path:
    """Copy `flow` to `dest` with the variant `block` (llm_node, prompt, params, node_inputs) as its own values, for
    the LLM `llm` (params.yaml's `llm`: its api, type and model). Returns the flow to serve: the folder, or the
    .prompty file of a prompty flow. Raises FlowError for a flow whose variant cannot be written into it."""
    connection = Connection(
        name=str(llm.get("name", "llm")), type=str(llm.get("type", "openai")), api=str(llm.get("api", "chat")),
        model=str(llm.get("model", "")), base_url="", api_key="",
    )  # fmt: skip
    binding = flow_engine.binding_for(connection, block)
    kind, flow_file = flow_engine.detect(flow, binding.prompt)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(flow, dest, ignore=shutil.ignore_patterns(*_SKIPPED_DIRS))
    node_inputs = block.get("node_inputs") or {}
    if kind is flow_engine.FlowKind.DAG:
        _bake_dag(dest / flow_file.name, binding, node_inputs)
        return dest
    if node_inputs:
        raise flow_engine.FlowError(f"{flow}: node_inputs need a DAG flow, this is a {kind.value} flow")
    if kind is flow_engine.FlowKind.FLEX:
        _bake_flex(dest / flow_file.name, binding)
        return dest
    for other in dest.glob("*.prompty"):  # a served prompty flow is one file: keep the variant's only
        if other.name != flow_file.name:
            other.unlink()
    _bake_prompty(dest / flow_file.name, binding, llm)
    return dest / flow_file.name


def _bake_dag(flow_yaml: Path, binding: flow_engine.LLMBinding, node_inputs: Mapping[str, Mapping[str, Any]]) -> None:
    spec = yaml.safe_load(flow_yaml.read_text(encoding="utf-8"))
    nodes = {node["name"]: node for node in spec.get("nodes", [])}
    for name in (binding.node, *node_inputs):
        if name not in nodes:
            raise flow_engine.FlowError(f"{flow_yaml}: no node {name!r} (named by the variant)")
    llm_node = nodes[str(binding.node)]
    if binding.prompt:
        llm_node.setdefault("source", {})["path"] = binding.prompt
    llm_node["api"] = binding.connection.api
    model_field = "deployment_name" if binding.connection.type == "azure_openai" else "model"
    if binding.connection.model:
        llm_node.setdefault("inputs", {})[model_field] = binding.connection.model
    llm_node.setdefault("inputs", {}).update(binding.params)
    for name, values in node_inputs.items():
        nodes[name].setdefault("inputs", {}).update(values)
    flow_yaml.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _bake_flex(flow_yaml: Path, binding: flow_engine.LLMBinding) -> None:
    """A class entry's `init` defaults become the variant's api, prompt and params (model_config stays a
    deploy-time value: prompt flow's serving reads it from PF_FLOW_INIT_CONFIG, as it holds the key)."""
    spec = yaml.safe_load(flow_yaml.read_text(encoding="utf-8"))
    init = spec.get("init") or {}
    if not init:
        raise flow_engine.FlowError(
            f"{flow_yaml}: a function entry takes the variant as keyword parameters, which a served flow cannot "
            "set; give the flow a class entry with `init` to deploy it"
        )
    offered = {
        **binding.params,
        "api": binding.connection.api,
        **({"prompt": binding.prompt} if binding.prompt else {}),
    }
    for name, value in offered.items():
        if name in init and name != "model_config":
            init[name] = {**(init[name] or {}), "default": value}
    flow_yaml.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _bake_prompty(file: Path, binding: flow_engine.LLMBinding, llm: Mapping[str, Any]) -> None:
    """The variant's params into `model.parameters`; a `model.configuration` (which a served prompty needs) from
    the selected LLM when the file has none, its key and endpoint as `${env:...}` references."""
    text = file.read_text(encoding="utf-8")
    _, front, body = text.split("---", 2) if text.startswith("---") else ("", "", text)
    meta = yaml.safe_load(front) or {}
    model = meta.setdefault("model", {})
    model["api"] = binding.connection.api
    if not model.get("configuration"):
        connection = llm_connection_yaml(llm)
        if llm.get("type") == "azure_openai":
            model["configuration"] = {
                "type": "azure_openai", "azure_endpoint": connection["api_base"], "api_key": connection["api_key"],
                "azure_deployment": str(llm.get("model", "")), "api_version": connection["api_version"],
            }  # fmt: skip
        else:
            model["configuration"] = {
                "type": "openai", "api_key": connection["api_key"], "base_url": connection["base_url"],
                "model": str(llm.get("model", "")),
            }  # fmt: skip
    model["parameters"] = {**(model.get("parameters") or {}), **binding.params}
    file.write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---{body}", encoding="utf-8")


def baked_flows(spec: DeploymentSpec, params: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Each deployed variant's flow, baked into out/<variant> (the new deployment's variant first)."""
    use_case = params["use_cases"][spec.use_case]
    return {
        variant: bake_variant(spec.flow, use_case["variants"][variant], params["llm"], out / variant)
        for variant in dict.fromkeys(d.variant for d in spec.deployments)
    }


def target_dir(spec: DeploymentSpec, root: Path) -> Path:
    """Where a target's build lives: .llmops/deploy/<env>/<use_case>/<target>/."""
    return runtime_dir(root) / "deploy" / spec.env / spec.use_case / spec.target


def llm_connection_yaml(llm: Mapping[str, Any], name: str = "llm") -> dict[str, Any]:
    """The prompt flow connection a served DAG flow's LLM nodes use, with every secret-ish value as an
    `${env:...}` reference resolved in the container (never a value)."""
    key = f"${{env:{name.upper()}_API_KEY}}"
    if llm.get("type") == "azure_openai":
        endpoint_env = llm.get("endpoint_env", "AZURE_OPENAI_ENDPOINT")
        return {"name": name, "type": "azure_open_ai", "api_key": key, "api_base": f"${{env:{endpoint_env}}}",
                "api_type": "azure", "api_version": str(llm.get("api_version", "2024-10-21"))}  # fmt: skip
    return {"name": name, "type": "open_ai", "api_key": key, "base_url": str(llm.get("base_url", ""))}


def build_docker_context(flow: Path, llm: Mapping[str, Any], out: Path, timeout_s: float = 600) -> Path:
    """`pf flow build --format docker` of `flow` into `out` (Dockerfile, flow/, connections/, start.sh, runit/).

    The build runs in a child process with a throwaway HOME: prompt flow exports the connections a DAG flow uses
    from its connection store, which must live under HOME, so the `llm` connection is created there first with a
    placeholder key. The exported connection holds `${env:LLM_API_KEY}`, never a value.
    """
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="llmops-pf-build-") as home:
        connection = Path(home) / "llm.yaml"
        if (flow / "flow.dag.yaml").is_file():
            placeholder = {**llm_connection_yaml(llm), "api_key": "placeholder-set-LLM_API_KEY-at-run-time"}
            connection.write_text(yaml.safe_dump(placeholder), encoding="utf-8")
        env = {**os.environ, "HOME": home, "XDG_DATA_HOME": str(Path(home) / "xdg")}
        env.pop("PF_HOME_DIRECTORY", None)
        command = [
            sys.executable,
            "-m",
            "stages.deploy.package",
            str(flow.resolve()),
            str(out.resolve()),
            str(connection),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"pf flow build --format docker failed for {flow}:\n{tail}")
    return out


def _build(flow: Path, out: Path, connection: Path) -> None:
    """The promptflow calls of `build_docker_context`, in its child process (prompt flow reads its home at import)."""
    flow_engine.configure(Path.home())
    from promptflow._sdk._load_functions import load_connection
    from promptflow.client import PFClient

    client = PFClient()
    if connection.is_file():
        client.connections.create_or_update(load_connection(connection))
    client.flows.build(flow, output=out, format="docker")


if __name__ == "__main__":
    _build(*(Path(arg) for arg in sys.argv[1:4]))
