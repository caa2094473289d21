"""What the cloud targets ship: each deployed variant's baked flow (stages/engine/bake.py), the environment of a
deployment, and the Docker build context prompt flow makes from a baked flow (stages/engine/promptflow/docker.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core import variants
from stages.core.project import runtime_dir
from stages.deploy.spec import Deployment, DeploymentSpec, SpecError
from stages.engine.bake import bake_variant
from stages.engine.maf import azure as maf_azure
from stages.engine.maf import is_maf_flow
from stages.engine.promptflow.docker import build_docker_context


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


def baked_flows(spec: DeploymentSpec, params: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Each deployed variant's flow, baked into out/<variant> with the node variants a pipeline run of it selects
    (the new deployment's variant first); a MAF workflow's, packaged for an Azure ML online endpoint."""
    use_case = params["use_cases"][spec.use_case]
    if is_maf_flow(spec.flow):  # a MAF workflow: an online endpoint package (stages/engine/maf/azure.py)
        if spec.target != "azureml":
            raise SpecError(
                f"target {spec.target}: {spec.use_case} is a MAF workflow; this target packages prompt flow flows "
                "(deploy it with --target local or --target azureml)"
            )
        served = list(dict.fromkeys(d.variant for d in spec.served))
        try:
            return maf_azure.packages(spec.use_case, {**use_case, "flow": str(spec.flow)}, served, params["llm"], out)
        except maf_azure.MafAzureError as exc:
            raise SpecError(f"target {spec.target}: {exc}") from None
    baked = {}
    for variant in dict.fromkeys(d.variant for d in spec.served):
        selected = variants.deployed_node_variants(spec.use_case, use_case, variant)
        baked[variant] = bake_variant(spec.flow, use_case["variants"][variant], params["llm"], out / variant, selected)
    return baked


def target_dir(spec: DeploymentSpec, root: Path) -> Path:
    """Where a target's build lives: .llmops/deploy/<env>/<use_case>/<target>/."""
    return runtime_dir(root) / "deploy" / spec.env / spec.use_case / spec.target


__all__ = ["baked_flows", "build_docker_context", "deployment_env", "stable_deployment", "target_dir"]
