"""Target kubernetes: the rendered manifests validate against the Kubernetes v1.33 object schemas (vendored,
strict: unknown fields fail), route by the configured weights, and hold no secret values."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from stages.core.project import load_params
from stages.deploy import kubernetes
from stages.deploy.spec import Deployment, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).parent / "k8s-schemas"
VERSIONS = {"v1": "aaaaaaaaaaaa", "v2": "bbbbbbbbbbbb"}


def validate(manifest: dict[str, Any]) -> None:
    """jsonschema against the kind's schema, the way kubernetes-validate does it (Draft 2020-12, shared $defs)."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", manifest["apiVersion"])  # networking.k8s.io/v1 -> networking-v1
    schema = json.loads((SCHEMAS / f"{manifest['kind'].lower()}-{api}.json").read_text())
    definitions = Resource.from_contents(json.loads((SCHEMAS / "_definitions.json").read_text()))
    registry = definitions @ (Resource.from_contents(schema) @ Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(manifest)


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_spec(ROOT, "web_classification", "dev", "kubernetes", load_params(ROOT))


def test_manifests_validate_against_the_kubernetes_schemas(spec: Any, tmp_path: Path) -> None:
    manifests = kubernetes.render(spec, VERSIONS, "conf/deploy/dev.yaml")
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert kinds == [
        ("Deployment", "web-classification-dev-green"),
        ("Service", "web-classification-dev-green"),
        ("HorizontalPodAutoscaler", "web-classification-dev-green"),
        ("Deployment", "web-classification-dev-blue"),
        ("Service", "web-classification-dev-blue"),
        ("HorizontalPodAutoscaler", "web-classification-dev-blue"),
        ("Service", "web-classification-dev"),
        ("Ingress", "web-classification-dev"),
        ("Ingress", "web-classification-dev-canary"),
    ]
    files = kubernetes.write_manifests(manifests, tmp_path)
    for file in files:  # what kubectl would read: the written YAML, not the dicts
        validate(yaml.safe_load(file.read_text()))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)


def test_the_schemas_catch_a_bad_manifest(spec: Any) -> None:
    deployment = kubernetes.render(spec, VERSIONS, "w")[0]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type"):
        validate(deployment)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
        validate(deployment)  # strict: a misspelt field is an error, not ignored


def test_deployments_images_env_and_autoscaling(spec: Any) -> None:
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in kubernetes.render(spec, VERSIONS, "w")}
    green = by_name[("Deployment", "web-classification-dev-green")]
    container = green["spec"]["template"]["spec"]["containers"][0]
    assert green["metadata"]["namespace"] == "llmops"
    assert container["image"] == "llmops/web-classification:bbbbbbbbbbbb"  # v2's baked flow
    assert container["env"] == [
        {"name": "LLMOPS_USE_CASE", "value": "web_classification"},
        {"name": "LLMOPS_DEPLOYMENT", "value": "green"},
        {"name": "LLMOPS_VARIANT", "value": "v2"},
        {
            "name": "LLM_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "web-classification-dev-secrets", "key": "LLM_API_KEY"}},
        },
    ]
    hpa = by_name[("HorizontalPodAutoscaler", "web-classification-dev-blue")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["scaleTargetRef"]["name"] == "web-classification-dev-blue"


def test_weighted_canary_routing(spec: Any) -> None:
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in kubernetes.render(spec, VERSIONS, "w")}
    main = by_name[("Ingress", "web-classification-dev")]
    canary = by_name[("Ingress", "web-classification-dev-canary")]

    def backend(ingress: dict) -> str:
        return ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]

    assert backend(main) == "web-classification-dev-blue" and "annotations" not in main["metadata"]
    assert backend(canary) == "web-classification-dev-green"
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "10",
    }
    assert main["spec"]["rules"][0]["host"] == canary["spec"]["rules"][0]["host"]

    single = dataclasses.replace(spec, deployments=(Deployment("blue", "v1", 100),))
    assert [m["metadata"]["name"] for m in kubernetes.render(single, VERSIONS, "w") if m["kind"] == "Ingress"] == [
        "web-classification-dev"
    ]
    three = dataclasses.replace(
        spec, deployments=(Deployment("green", "v2", 10), Deployment("blue", "v1", 80), Deployment("red", "v1", 10))
    )
    with pytest.raises(SpecError, match=r"conf/deploy/dev.yaml: .*one prior deployment.*\['red'\]"):
        kubernetes.render(three, VERSIONS, "conf/deploy/dev.yaml")


def test_no_secret_values_in_manifests(spec: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    canary_key = "sk-canary-4f1d9a7e"
    monkeypatch.setenv("LLM_API_KEY", canary_key)
    with_env = dataclasses.replace(spec, env_vars={"LOG_LEVEL": "info"})
    files = kubernetes.write_manifests(kubernetes.render(with_env, VERSIONS, "w"), tmp_path)
    text = "".join(f.read_text() for f in files)
    assert canary_key not in text and "kind: Secret" not in text
    assert "LOG_LEVEL" in text


def test_llmops_deploy_and_rollback_reach_the_kubernetes_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI dispatches to the target module, records the split, and a rollback renders the previous split."""
    import shutil

    from stages import cli

    root = tmp_path / "repo"
    for part in ("conf", "params.yaml", "pyproject.toml", "use_cases/general_qa"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / part, root / part)
    (root / ".dvc").mkdir()  # what makes a folder a project
    monkeypatch.chdir(root)
    assert cli.main(["deploy", "--use-case", "general_qa", "--target", "kubernetes", "--env", "dev"]) == 0
    state = json.loads((root / ".llmops/deploy/dev/general_qa.json").read_text())
    assert state["targets"]["kubernetes"]["current"]["weights"] == {"green": 10, "blue": 90}
    manifests = root / ".llmops/deploy/dev/general_qa/kubernetes/manifests"
    canary = yaml.safe_load((manifests / "ingress-general-qa-dev-canary.yaml").read_text())
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "10"

    images = sorted((root / ".llmops/deploy/dev/general_qa/kubernetes/images").glob("*/Dockerfile"))
    built = {image: image.stat().st_mtime_ns for image in images}
    assert len(built) == 2  # one image per deployed variant

    deploy_conf = root / "conf/deploy/dev.yaml"
    deploy_conf.write_text(
        deploy_conf.read_text().replace("weight: 10}", "weight: 50}").replace("weight: 90}", "weight: 50}")
    )
    assert cli.main(["deploy", "--use-case", "general_qa", "--target", "kubernetes", "--env", "dev"]) == 0
    canary = yaml.safe_load((manifests / "ingress-general-qa-dev-canary.yaml").read_text())
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "50"
    assert {image: image.stat().st_mtime_ns for image in images} == built  # a new split builds no image again
    assert cli.main(["rollback", "--use-case", "general_qa", "--env", "dev", "--target", "kubernetes"]) == 0
    rolled_back = json.loads((root / ".llmops/deploy/dev/general_qa.json").read_text())
    assert rolled_back["targets"]["kubernetes"]["current"]["weights"] == {"green": 10, "blue": 90}

    prompty = root / "use_cases/general_qa/flows/answer/answer.prompty"  # v1's prompt: its image is built again
    prompty.write_text(prompty.read_text().replace("in a few words", "in very few words"))
    assert cli.main(["deploy", "--use-case", "general_qa", "--target", "kubernetes", "--env", "dev"]) == 0
    rebuilt = {image.parent.name for image in images if image.stat().st_mtime_ns != built[image]}
    assert rebuilt == {"v1"}  # v2's baked flow (its own prompty only) did not change


def test_each_image_context_carries_the_project_modules_its_flow_imports(tmp_path: Path) -> None:
    """math_coding's flow imports stages.core.sandbox: its images' contexts run it with only the context on
    sys.path (no editable install, no PYTHONPATH), and the manifests name the images built from them."""
    import shutil

    from context_probe import probe

    root = tmp_path / "repo"
    for part in ("conf", "params.yaml", "pyproject.toml", "use_cases/math_coding"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / part, root / part)
    (root / ".dvc").mkdir()
    spec = load_spec(root, "math_coding", "dev", "kubernetes", load_params(root))
    record = kubernetes.deploy(spec, root)
    assert set(record["image_contexts"]) == {"v1", "v2"}
    for variant, context in record["image_contexts"].items():
        assert sorted(p.name for p in (Path(context) / "flow/stages/core").glob("*.py")) == [
            "__init__.py",
            "sandbox.py",
        ]
        result = probe(Path(context), None, {}, tmp_path)
        assert result == {"stages": ["stages", "stages.core", "stages.core.sandbox"], "outside": []}, variant
        deployment = next(
            yaml.safe_load(Path(f).read_text()) for f in record["manifests"] if Path(f).name.startswith("deployment-")
            and yaml.safe_load(Path(f).read_text())["metadata"]["labels"]["variant"] == variant
        )  # fmt: skip
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == f"llmops/math-coding:{record['versions'][variant]}"


def test_a_shadow_gets_its_objects_and_every_request_mirrored(spec: Any) -> None:
    shadowed = dataclasses.replace(spec, shadow=Deployment("candidate", "v2", 0))
    manifests = kubernetes.render(shadowed, VERSIONS, "conf/deploy/dev.yaml")
    names = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert ("Deployment", "web-classification-dev-candidate") in names
    assert ("Service", "web-classification-dev-candidate") in names
    ingresses = [m for m in manifests if m["kind"] == "Ingress"]
    target = "http://web-classification-dev-candidate.llmops.svc.cluster.local$request_uri"
    assert [i["metadata"]["annotations"]["nginx.ingress.kubernetes.io/mirror-target"] for i in ingresses] == [
        target
    ] * 2
    for manifest in manifests:
        validate(manifest)
