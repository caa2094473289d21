"""Target `azureml`: an Azure ML managed online endpoint with one deployment per configured deployment.

Order of operations (`apply`), so that no deployment ever loses traffic it should keep:
1. each variant's baked flow is registered as a Model tagged with its content hash, unless a version with that
   hash exists (a MAF workflow's package is its deployment's code instead: stages/engine/maf/azure.py);
2. the endpoint is created when missing (key auth), with no traffic;
3. each deployment that is missing, or serves another flow hash, is created or updated; a new deployment has no
   traffic (the endpoint's traffic is not touched);
4. the endpoint's traffic is set from the config in one update. A deployment on the endpoint that the config
   does not list, but that serves traffic, stops the deploy: listing it with weight 0 is how config drains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.project import load_params
from stages.deploy import package
from stages.deploy.spec import DeploymentSpec, SpecError
from stages.engine import bake
from stages.engine.maf import azure as maf_azure
from stages.llm.connections import environment

HASH_TAG = "flow_sha256"
CONFIG_TAG = "config_sha256"  # a deployment's instance, image and env vars: a change updates the deployment
SERVING_IMAGE = "mcr.microsoft.com/azureml/promptflow/promptflow-runtime:latest"
_ROUTE = {"port": 8080}


def model_name(spec: DeploymentSpec) -> str:
    return f"{spec.use_case.replace('_', '-')}-flow"


def model_entity(spec: DeploymentSpec, variant: str, flow: Path, sha256: str) -> Any:
    """The Model that registers one variant's baked flow (a prompt flow model: the flow file as a property)."""
    from azure.ai.ml.entities import Model

    flow_file = (
        flow.name if flow.is_file() else ("flow.dag.yaml" if (flow / "flow.dag.yaml").is_file() else "flow.flex.yaml")
    )
    return Model(
        name=model_name(spec),
        path=str(flow.parent if flow.is_file() else flow),
        description=f"{spec.use_case} flow, variant {variant}",
        tags={HASH_TAG: sha256, "use_case": spec.use_case, "variant": variant},
        properties={"azureml.promptflow.dag_file": flow_file, "is-promptflow": "true"},
    )


def endpoint_entity(spec: DeploymentSpec) -> Any:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=spec.endpoint, auth_mode="key", tags={"use_case": spec.use_case, "env": spec.env})


def deployment_entity(spec: DeploymentSpec, index: int, model: Any, sha256: str, workspace: Mapping[str, str]) -> Any:
    """The ManagedOnlineDeployment of `spec.deployments[index]`, serving `model` with prompt flow's runtime image."""
    from azure.ai.ml.entities import Environment, ManagedOnlineDeployment

    deployment = spec.deployments[index]
    override = ",".join(
        f"deployment.{key}={value}"
        for key, value in (
            ("subscription_id", workspace["subscription_id"]), ("resource_group", workspace["resource_group"]),
            ("workspace_name", workspace["workspace_name"]), ("endpoint_name", spec.endpoint),
            ("deployment_name", deployment.name),
        )
    )  # fmt: skip
    environment = Environment(
        image=str(spec.options.get("image", SERVING_IMAGE)),
        inference_config={
            "liveness_route": {**_ROUTE, "path": "/health"},
            "readiness_route": {**_ROUTE, "path": "/health"},
            "scoring_route": {**_ROUTE, "path": "/score"},
        },
    )
    return ManagedOnlineDeployment(
        name=deployment.name,
        endpoint_name=spec.endpoint,
        model=f"azureml:{model.name}:{model.version}",
        environment=environment,
        instance_type=spec.instance_type,
        instance_count=spec.instance_count,
        environment_variables={
            **package.deployment_env(spec, deployment),
            "PROMPTFLOW_RUN_MODE": "serving",
            "PRT_CONFIG_OVERRIDE": override,
        },
        tags={HASH_TAG: sha256, CONFIG_TAG: config_sha256(spec, index), "variant": deployment.variant},
    )


def config_sha256(spec: DeploymentSpec, index: int) -> str:
    """The hash of what a deployment runs on besides its flow (instance, image, env vars)."""
    deployment = spec.deployments[index]
    config = {
        "instance": [spec.instance_type, spec.instance_count],
        "image": str(spec.options.get("image", SERVING_IMAGE)),
        "env": package.deployment_env(spec, deployment),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def mirror_percent(spec: DeploymentSpec, where: str) -> int:
    """The share of live traffic Azure ML mirrors to the shadow: `targets.azureml.mirror_percent` (Azure ML
    mirrors at most 50%)."""
    value = spec.options.get("mirror_percent", 50)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
        raise SpecError(f"{where}: targets.azureml.mirror_percent must be a whole percent from 1 to 50, got {value!r}")
    return value


def target_traffic(spec: DeploymentSpec, current: Mapping[str, int], where: str) -> dict[str, int]:
    """The endpoint's traffic after this deploy: the configured weights. Raises SpecError when a deployment that
    serves traffic now is not in the config (it would silently drop to 0)."""
    unlisted = {name: weight for name, weight in current.items() if weight and name not in spec.weights}
    if unlisted:
        raise SpecError(
            f"{where}: endpoint {spec.endpoint} has deployments serving traffic that the config does not list: "
            f"{unlisted}; add them to `deployments` (weight 0 to drain them)"
        )
    return dict(spec.weights)


def _register_models(
    client: Any, spec: DeploymentSpec, flows: Mapping[str, Path]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each served variant's model, registered unless one with its flow's hash exists (a MAF package is the
    deployment's code, not a model: None): the record of each, and the models by variant."""
    models: dict[str, dict[str, Any]] = {}
    registered: dict[str, Any] = {}
    served = list(dict.fromkeys(d.variant for d in spec.served))  # the new deployment's variant first
    maf = all(maf_azure.is_package(flows[variant]) for variant in served)
    existing_models = [] if maf else list(client.models.list(name=model_name(spec)))
    for variant in served:
        flow = flows[variant]
        sha256 = bake.flow_sha256(flow)
        if maf_azure.is_package(flow):
            registered[variant] = None
            models[variant] = {"name": None, "version": None, HASH_TAG: sha256, "registered": False}
            continue
        found = next((m for m in existing_models if (m.tags or {}).get(HASH_TAG) == sha256), None)
        model = found or client.models.create_or_update(model_entity(spec, variant, flow, sha256))
        registered[variant] = model
        models[variant] = {"name": model.name, "version": model.version, HASH_TAG: sha256, "registered": not found}
    return models, registered


def apply(
    client: Any, spec: DeploymentSpec, flows: Mapping[str, Path], workspace: Mapping[str, str], where: str
) -> dict[str, Any]:
    """Register, create and route on `client` (an MLClient); `flows` maps each variant to its baked flow.
    Returns the record of what was done (models, deployments created or kept, traffic before and after)."""
    from azure.core.exceptions import ResourceNotFoundError

    mirror = mirror_percent(spec, where) if spec.shadow is not None else None  # checked before any change
    models, registered = _register_models(client, spec, flows)
    try:
        endpoint = client.online_endpoints.get(spec.endpoint)
        endpoint_created = False
    except ResourceNotFoundError:
        endpoint = client.online_endpoints.begin_create_or_update(endpoint_entity(spec)).result()
        endpoint_created = True
    previous = {name: int(weight) for name, weight in (endpoint.traffic or {}).items()}
    traffic = target_traffic(spec, previous, where)
    on_endpoint = {d.name: d for d in client.online_deployments.list(endpoint_name=spec.endpoint)}
    deployments = []
    spec = dataclasses.replace(spec, deployments=spec.served)  # the shadow is created as a deployment without traffic
    for index, deployment in enumerate(spec.deployments):
        sha256 = models[deployment.variant][HASH_TAG]
        current = on_endpoint.get(deployment.name)
        wanted = {HASH_TAG: sha256, CONFIG_TAG: config_sha256(spec, index)}
        same = current is not None and all((current.tags or {}).get(k) == v for k, v in wanted.items())
        action = "kept" if same else "created"
        if action == "created" and registered[deployment.variant] is None:
            entity = maf_azure.deployment_entity(
                deployment.name, spec.endpoint, flows[deployment.variant], (spec.instance_type, spec.instance_count),
                package.deployment_env(spec, deployment),
                {HASH_TAG: sha256, CONFIG_TAG: wanted[CONFIG_TAG], "variant": deployment.variant},
            )  # fmt: skip
            client.online_deployments.begin_create_or_update(entity).result()
            action = "updated" if current is not None else "created"
        elif action == "created":
            entity = deployment_entity(spec, index, registered[deployment.variant], sha256, workspace)
            client.online_deployments.begin_create_or_update(entity).result()
            action = "updated" if current is not None else "created"
        deployments.append({"name": deployment.name, "variant": deployment.variant, "action": action})
    endpoint.traffic = traffic
    if spec.shadow is not None and mirror is not None:  # Azure ML copies this share of live traffic, drops answers
        endpoint.mirror_traffic = {spec.shadow.name: mirror}
    client.online_endpoints.begin_create_or_update(endpoint).result()
    return {
        "target": "azureml",
        "endpoint": spec.endpoint,
        "endpoint_created": endpoint_created,
        "models": models,
        "deployments": deployments,
        "previous_traffic": previous,
        "traffic": traffic,
        **({"mirror_traffic": dict(endpoint.mirror_traffic)} if spec.shadow is not None else {}),
    }


def set_traffic(client: Any, spec: DeploymentSpec, traffic: Mapping[str, int]) -> dict[str, Any]:
    """Route the endpoint's traffic to `traffic` in one update; every deployment it names must exist."""
    endpoint = client.online_endpoints.get(spec.endpoint)
    on_endpoint = {d.name for d in client.online_deployments.list(endpoint_name=spec.endpoint)}
    if missing := sorted(set(traffic) - on_endpoint):
        raise SpecError(f"endpoint {spec.endpoint}: cannot route traffic to missing deployments {missing}")
    before = {name: int(weight) for name, weight in (endpoint.traffic or {}).items()}
    endpoint.traffic = dict(traffic)
    client.online_endpoints.begin_create_or_update(endpoint).result()
    return {"target": "azureml", "endpoint": spec.endpoint, "previous_traffic": before, "traffic": dict(traffic)}


def workspace_of(spec: DeploymentSpec, env: Mapping[str, str], where: str) -> dict[str, str]:
    """Subscription, resource group and workspace, from the environment variables the config names."""
    values = {}
    for key, option, default in (
        ("subscription_id", "subscription_id_env", "AZURE_SUBSCRIPTION_ID"),
        ("resource_group", "resource_group_env", "AZURE_RESOURCE_GROUP"),
        ("workspace_name", "workspace_env", "AZURE_ML_WORKSPACE"),
    ):
        name = str(spec.options.get(option, default))
        if not env.get(name):
            raise SpecError(f"{where}: targets.azureml.{option}: environment variable {name} is not set")
        values[key] = env[name]
    return values


def ml_client(workspace: Mapping[str, str]) -> Any:
    """An MLClient for the workspace, authenticated by DefaultAzureCredential (CLI login, managed identity...)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), **workspace)


def deploy(spec: DeploymentSpec, root: Path) -> dict[str, Any]:
    where = f"conf/deploy/{spec.env}.yaml"
    workspace = workspace_of(spec, environment(root), where)
    flows = package.baked_flows(spec, load_params(root), package.target_dir(spec, root) / "flows")
    return apply(ml_client(workspace), spec, flows, workspace, where)


def rollback(spec: DeploymentSpec, root: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """Restore the traffic split `previous["weights"]` (the state file's previous split) in one update."""
    workspace = workspace_of(spec, environment(root), f"conf/deploy/{spec.env}.yaml")
    return set_traffic(ml_client(workspace), spec, previous["weights"])
