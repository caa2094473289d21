"""Target `kubernetes`: manifests rendered from the config, one YAML file per object, plus the Docker build
context of each variant's image (from `pf flow build --format docker`). Nothing is applied: `kubectl apply -f
<folder>` does that.

Objects: per deployment a Deployment, a Service and a HorizontalPodAutoscaler; a Service for the endpoint (all
deployments' pods); weighted routing through ingress-nginx canary Ingresses: the main Ingress routes to the
stable deployment (the first prior deployment with traffic), a canary Ingress on the same host sends
`nginx.ingress.kubernetes.io/canary-weight` percent to the new one. ingress-nginx allows one canary per host, so
at most two deployments may have traffic. Secrets are never rendered: containers read them from a Secret by
reference (`secretKeyRef`), created apart (`kubectl create secret generic <name> --from-literal=...`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.io import write_text
from stages.core.project import load_params
from stages.deploy import package
from stages.deploy.spec import Deployment, DeploymentSpec, SpecError
from stages.engine import bake

PORT = 8080  # prompt flow's serving image listens here


def _meta(spec: DeploymentSpec, name: str, **labels: str) -> dict[str, Any]:
    namespace = str(spec.options.get("namespace", "default"))
    return {"name": name, "namespace": namespace, "labels": {"app": spec.endpoint, **labels}}


def routing(spec: DeploymentSpec, where: str) -> tuple[Deployment, Deployment | None]:
    """The stable deployment (main Ingress) and the canary (the new deployment, when it is not the stable one)."""
    new, stable = spec.deployments[0], package.stable_deployment(spec)
    weighted = [d for d in spec.deployments if d.weight > 0 and d not in (new, stable)]
    if weighted:
        raise SpecError(
            f"{where}: targets.kubernetes routes with ingress-nginx canaries (one per host): only the new "
            f"deployment and one prior deployment may have traffic, also got {[d.name for d in weighted]}"
        )
    return stable, (new if new is not stable else None)


def render(spec: DeploymentSpec, versions: Mapping[str, str], where: str) -> list[dict[str, Any]]:
    """All manifests. `versions` maps each variant to its image version (its baked flow's hash, shortened)."""
    options = spec.options
    replicas = options.get("replicas") or {"min": 1, "max": 3}
    secret = str(options.get("secret", "{endpoint}-secrets")).format(endpoint=spec.endpoint)
    secret_env = list(options.get("secret_env", ["LLM_API_KEY"]))
    resources = options.get("resources") or {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    host = str(options.get("host", "{endpoint}.example.com")).format(endpoint=spec.endpoint)
    manifests: list[dict[str, Any]] = []
    for d in spec.deployments:
        name = f"{spec.endpoint}-{d.name}"
        labels = {"deployment": d.name}
        image = str(options.get("image", "llmops/{use_case}:{version}")).format(
            use_case=spec.use_case.replace("_", "-"), version=versions[d.variant]
        )
        env = [{"name": k, "value": v} for k, v in package.deployment_env(spec, d).items()]
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in secret_env]
        probe = {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 10}
        container = {
            "name": "flow", "image": image, "ports": [{"containerPort": PORT, "name": "http"}], "env": env,
            "resources": resources, "readinessProbe": probe, "livenessProbe": {**probe, "initialDelaySeconds": 30},
        }  # fmt: skip
        manifests.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, name, **labels, variant=d.variant),
            "spec": {
                "replicas": int(replicas["min"]),
                "selector": {"matchLabels": {"app": spec.endpoint, **labels}},
                "template": {"metadata": {"labels": {"app": spec.endpoint, **labels, "variant": d.variant}},
                             "spec": {"containers": [container]}},
            },
        })  # fmt: skip
        manifests.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, name, **labels),
            "spec": {"selector": {"app": spec.endpoint, **labels},
                     "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
        })  # fmt: skip
        manifests.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(spec, name, **labels),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": int(replicas["min"]), "maxReplicas": int(replicas["max"]),
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": int(options.get("cpu_target_percent", 70))}}}],
            },
        })  # fmt: skip
    manifests.append({
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, spec.endpoint),
        "spec": {"selector": {"app": spec.endpoint}, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
    })  # fmt: skip
    stable, canary = routing(spec, where)
    manifests.append(_ingress(spec, spec.endpoint, host, stable, {}))
    if canary is not None:
        annotations = {"nginx.ingress.kubernetes.io/canary": "true",
                       "nginx.ingress.kubernetes.io/canary-weight": str(canary.weight)}  # fmt: skip
        manifests.append(_ingress(spec, f"{spec.endpoint}-canary", host, canary, annotations))
    return manifests


def _ingress(
    spec: DeploymentSpec, name: str, host: str, target: Deployment, annotations: dict[str, str]
) -> dict[str, Any]:
    backend = {"service": {"name": f"{spec.endpoint}-{target.name}", "port": {"number": 80}}}
    metadata = {**_meta(spec, name, deployment=target.name), **({"annotations": annotations} if annotations else {})}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
        "spec": {"ingressClassName": str(spec.options.get("ingress_class", "nginx")),
                 "rules": [{"host": host, "http": {"paths": [
                     {"path": "/", "pathType": "Prefix", "backend": backend}]}}]},
    }  # fmt: skip


def write_manifests(manifests: list[dict[str, Any]], out: Path) -> list[Path]:
    """One file per object, `<kind>-<name>.yaml`; files of objects no longer rendered are removed."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for manifest in manifests:
        path = out / f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        write_text(path, yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    for stale in out.glob("*.yaml"):
        if stale not in written:
            stale.unlink()
    return written


def deploy(spec: DeploymentSpec, root: Path) -> dict[str, Any]:
    params = load_params(root)
    where = f"conf/deploy/{spec.env}.yaml"
    routing(spec, where)  # refuse a split ingress-nginx cannot express before building anything
    base = package.target_dir(spec, root)
    flows = package.baked_flows(spec, params, base / "flows")
    versions = {variant: bake.flow_sha256(flow)[:12] for variant, flow in flows.items()}
    contexts = {
        variant: str(package.build_docker_context(flow, params["llm"], base / "images" / variant))
        for variant, flow in flows.items()
    }
    manifests = render(spec, versions, where)
    files = write_manifests(manifests, base / "manifests")
    return {
        "target": "kubernetes",
        "endpoint": spec.endpoint,
        "versions": versions,
        "image_contexts": contexts,
        "manifests": [str(f) for f in files],
        "traffic": dict(spec.weights),
        "next": f"docker build each image context, push it, then kubectl apply -f {base / 'manifests'}",
    }


def rollback(spec: DeploymentSpec, root: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """Re-render the Ingresses with the previous weights (`previous["weights"]`); apply them with kubectl."""
    weights = previous["weights"]
    restored = tuple(Deployment(d.name, d.variant, int(weights.get(d.name, 0))) for d in spec.deployments)
    return deploy(dataclasses.replace(spec, deployments=restored), root)
