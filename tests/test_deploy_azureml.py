"""Target azureml against a fake MLClient (the SDK boundary): the exact entities, the call order, the hash skip,
and that no deployment is left at 0 traffic unless the config says so."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.core.exceptions import ResourceNotFoundError

from stages.core.project import load_params
from stages.deploy import azureml
from stages.deploy.spec import Deployment, SpecError, load_spec
from stages.engine import bake

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}


class _Poller:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class FakeMLClient:
    """Records every call as (operation, argument); holds models, one endpoint and its deployments in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.models_store: list[Model] = []
        self.endpoint: ManagedOnlineEndpoint | None = None
        self.deployments_store: dict[str, ManagedOnlineDeployment] = {}
        self.models = SimpleNamespace(list=self._models_list, create_or_update=self._model_create)
        self.online_endpoints = SimpleNamespace(get=self._endpoint_get, begin_create_or_update=self._endpoint_put)
        self.online_deployments = SimpleNamespace(
            list=self._deployments_list, begin_create_or_update=self._deployment_put
        )

    def _models_list(self, name: str) -> list[Model]:
        self.calls.append(("models.list", name))
        return [m for m in self.models_store if m.name == name]

    def _model_create(self, model: Model) -> Model:
        self.calls.append(("models.create_or_update", model))
        stored = Model(name=model.name, version=str(len(self.models_store) + 1), tags=dict(model.tags))
        self.models_store.append(stored)
        return stored

    def _endpoint_get(self, name: str) -> ManagedOnlineEndpoint:
        self.calls.append(("online_endpoints.get", name))
        if self.endpoint is None or self.endpoint.name != name:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        return self.endpoint

    def _endpoint_put(self, endpoint: ManagedOnlineEndpoint) -> _Poller:
        self.calls.append(("online_endpoints.begin_create_or_update", dict(endpoint.traffic or {})))
        self.endpoint = endpoint
        return _Poller(endpoint)

    def _deployments_list(self, endpoint_name: str) -> list[ManagedOnlineDeployment]:
        self.calls.append(("online_deployments.list", endpoint_name))
        return list(self.deployments_store.values())

    def _deployment_put(self, deployment: ManagedOnlineDeployment) -> _Poller:
        self.calls.append(("online_deployments.begin_create_or_update", deployment))
        self.deployments_store[deployment.name] = deployment
        return _Poller(deployment)

    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Path]]:
    params = load_params(ROOT)
    spec = load_spec(ROOT, "web_classification", "dev", "azureml", params)
    use_case = params["use_cases"]["web_classification"]
    base = tmp_path_factory.mktemp("baked")
    flows = {v: bake.bake_variant(spec.flow, use_case["variants"][v], params["llm"], base / v) for v in ("v1", "v2")}
    return spec, flows


def test_first_deploy_registers_creates_with_no_traffic_then_routes_once(setup: tuple) -> None:
    spec, flows = setup
    client = FakeMLClient()
    record = azureml.apply(client, spec, flows, WORKSPACE, "conf/deploy/dev.yaml")

    assert client.operations() == [
        "models.list",
        "models.create_or_update",  # v2 (green's variant) first: the new deployment's order
        "models.create_or_update",
        "online_endpoints.get",
        "online_endpoints.begin_create_or_update",  # the endpoint, created without traffic
        "online_deployments.list",
        "online_deployments.begin_create_or_update",  # green
        "online_deployments.begin_create_or_update",  # blue
        "online_endpoints.begin_create_or_update",  # traffic, in one update
    ]
    hashes = {v: bake.flow_sha256(f) for v, f in flows.items()}
    models = [arg for op, arg in client.calls if op == "models.create_or_update"]
    assert [(m.name, m.tags) for m in models] == [
        ("web-classification-flow", {"flow_sha256": hashes["v2"], "use_case": "web_classification", "variant": "v2"}),
        ("web-classification-flow", {"flow_sha256": hashes["v1"], "use_case": "web_classification", "variant": "v1"}),
    ]
    assert models[0].properties == {"azureml.promptflow.dag_file": "flow.dag.yaml", "is-promptflow": "true"}
    assert Path(models[0].path) == flows["v2"]

    endpoint_calls = [arg for op, arg in client.calls if op == "online_endpoints.begin_create_or_update"]
    assert endpoint_calls == [{}, {"green": 10, "blue": 90}]
    assert client.endpoint.auth_mode == "key" and client.endpoint.name == "web-classification-dev"

    green, blue = (arg for op, arg in client.calls if op == "online_deployments.begin_create_or_update")
    assert (green.name, green.endpoint_name, green.model) == (
        "green",
        "web-classification-dev",
        "azureml:web-classification-flow:1",
    )
    assert (blue.name, blue.model) == ("blue", "azureml:web-classification-flow:2")
    assert (green.instance_type, green.instance_count) == ("Standard_DS3_v2", 1)
    assert green.tags == {"flow_sha256": hashes["v2"], "config_sha256": azureml.config_sha256(spec, 0), "variant": "v2"}
    assert green.environment_variables == {
        "LLMOPS_USE_CASE": "web_classification",
        "LLMOPS_DEPLOYMENT": "green",
        "LLMOPS_VARIANT": "v2",
        "PROMPTFLOW_RUN_MODE": "serving",
        "PRT_CONFIG_OVERRIDE": "deployment.subscription_id=sub-1,deployment.resource_group=rg-1,"
        "deployment.workspace_name=ws-1,deployment.endpoint_name=web-classification-dev,"
        "deployment.deployment_name=green",
    }
    assert green.environment.image == azureml.SERVING_IMAGE
    assert green.environment.inference_config["scoring_route"] == {"port": 8080, "path": "/score"}
    assert record["traffic"] == {"green": 10, "blue": 90} and record["previous_traffic"] == {}
    assert [m["registered"] for m in record["models"].values()] == [True, True]


def test_redeploy_skips_registration_and_unchanged_deployments(setup: tuple) -> None:
    spec, flows = setup
    client = FakeMLClient()
    azureml.apply(client, spec, flows, WORKSPACE, "w")
    client.calls.clear()
    record = azureml.apply(client, spec, flows, WORKSPACE, "w")

    assert client.operations() == [
        "models.list",  # both hashes are registered already: no create
        "online_endpoints.get",
        "online_deployments.list",
        "online_endpoints.begin_create_or_update",
    ]
    assert [d["action"] for d in record["deployments"]] == ["kept", "kept"]
    assert [m["registered"] for m in record["models"].values()] == [False, False]
    assert record["previous_traffic"] == record["traffic"] == {"green": 10, "blue": 90}

    bigger = dataclasses.replace(spec, instance_count=2)  # same flows, another instance count: updated, not kept
    client.calls.clear()
    record = azureml.apply(client, bigger, flows, WORKSPACE, "w")
    updated = [arg for op, arg in client.calls if op == "online_deployments.begin_create_or_update"]
    assert [(d.name, d.instance_count) for d in updated] == [("green", 2), ("blue", 2)]
    assert [d["action"] for d in record["deployments"]] == ["updated", "updated"]
    assert "models.create_or_update" not in client.operations()


def test_a_new_deployment_never_zeroes_the_existing_ones(setup: tuple) -> None:
    """Existing blue serves 100%; the new green is created with no traffic, then the split is set to 10/90."""
    spec, flows = setup
    client = FakeMLClient()
    only_blue = dataclasses.replace(spec, deployments=(Deployment("blue", "v1", 100),))
    azureml.apply(client, only_blue, {"v1": flows["v1"]}, WORKSPACE, "w")
    assert client.endpoint.traffic == {"blue": 100}
    client.calls.clear()

    traffic_seen: list[dict] = []
    put = client.online_deployments.begin_create_or_update

    def watch(deployment: ManagedOnlineDeployment) -> _Poller:
        traffic_seen.append(dict(client.endpoint.traffic))
        return put(deployment)

    client.online_deployments.begin_create_or_update = watch
    azureml.apply(client, spec, flows, WORKSPACE, "w")
    assert traffic_seen == [{"blue": 100}]  # while green was created, blue kept all the traffic
    assert [arg.name for op, arg in client.calls if op == "online_deployments.begin_create_or_update"] == ["green"]
    assert client.endpoint.traffic == {"green": 10, "blue": 90}


def test_unlisted_deployment_with_traffic_stops_the_deploy(setup: tuple) -> None:
    spec, flows = setup
    client = FakeMLClient()
    client.endpoint = ManagedOnlineEndpoint(name=spec.endpoint, traffic={"red": 30, "blue": 70})
    with pytest.raises(SpecError, match=r"conf/deploy/dev.yaml: .*\{'red': 30\}.*weight 0 to drain"):
        azureml.apply(client, spec, flows, WORKSPACE, "conf/deploy/dev.yaml")
    assert "online_deployments.begin_create_or_update" not in client.operations()
    assert client.endpoint.traffic == {"red": 30, "blue": 70}


def test_rollback_sets_the_previous_split_in_one_update(setup: tuple) -> None:
    spec, flows = setup
    client = FakeMLClient()
    azureml.apply(client, spec, flows, WORKSPACE, "w")
    client.calls.clear()
    record = azureml.set_traffic(client, spec, {"green": 0, "blue": 100})
    assert client.operations() == [
        "online_endpoints.get",
        "online_deployments.list",
        "online_endpoints.begin_create_or_update",
    ]
    assert record == {"target": "azureml", "endpoint": spec.endpoint, "previous_traffic": {"green": 10, "blue": 90},
                      "traffic": {"green": 0, "blue": 100}}  # fmt: skip
    with pytest.raises(SpecError, match=r"missing deployments \['red'\]"):
        azureml.set_traffic(client, spec, {"red": 100})


def test_workspace_comes_from_the_named_environment_variables(setup: tuple) -> None:
    spec, _ = setup
    env = {"AZURE_SUBSCRIPTION_ID": "s", "AZURE_RESOURCE_GROUP": "g", "AZURE_ML_WORKSPACE": "w"}
    assert azureml.workspace_of(spec, env, "x") == {
        "subscription_id": "s",
        "resource_group": "g",
        "workspace_name": "w",
    }
    with pytest.raises(SpecError, match=r"targets\.azureml\.workspace_env: environment variable AZURE_ML_WORKSPACE"):
        azureml.workspace_of(spec, {**env, "AZURE_ML_WORKSPACE": ""}, "x")


def test_a_shadow_is_created_without_traffic_and_mirrored(setup: tuple) -> None:
    spec, flows = setup
    options = {**spec.options, "mirror_percent": 20}
    shadowed = dataclasses.replace(spec, shadow=Deployment("candidate", "v2", 0), options=options)
    client = FakeMLClient()
    record = azureml.apply(client, shadowed, flows, WORKSPACE, "conf/deploy/dev.yaml")
    created = [arg.name for op, arg in client.calls if op == "online_deployments.begin_create_or_update"]
    assert created == ["green", "blue", "candidate"]
    assert client.endpoint.traffic == {"green": 10, "blue": 90}  # the shadow answers no user
    assert client.endpoint.mirror_traffic == {"candidate": 20} and record["mirror_traffic"] == {"candidate": 20}
    too_much = dataclasses.replace(shadowed, options={**spec.options, "mirror_percent": 80})
    with pytest.raises(SpecError, match=r"targets.azureml.mirror_percent must be a whole percent from 1 to 50"):
        azureml.apply(FakeMLClient(), too_much, flows, WORKSPACE, "conf/deploy/dev.yaml")


def test_a_maf_use_case_deploys_as_score_py_with_the_pinned_environment(tmp_path: Path) -> None:
    """A MAF use case: each variant's package (maf-online-endpoint's shape: score.py, conda.yml from the MAF pins)
    is its deployment's code configuration; no model is registered; the rest of the order is the same."""
    from stages.deploy import package

    params = load_params(ROOT)
    spec = load_spec(ROOT, "web_classification_maf", "dev", "azureml", params)
    flows = package.baked_flows(spec, params, tmp_path / "flows")
    client = FakeMLClient()
    record = azureml.apply(client, spec, flows, WORKSPACE, "conf/deploy/dev.yaml")

    assert client.operations() == [
        "online_endpoints.get",
        "online_endpoints.begin_create_or_update",
        "online_deployments.list",
        "online_deployments.begin_create_or_update",  # green (v2)
        "online_deployments.begin_create_or_update",  # blue (v1)
        "online_endpoints.begin_create_or_update",
    ]
    green, blue = (arg for op, arg in client.calls if op == "online_deployments.begin_create_or_update")
    assert green.model is None and Path(green.code_configuration.code) == flows["v2"] == tmp_path / "flows/v2"
    assert green.code_configuration.scoring_script == "score.py"
    conda = yaml.safe_load((flows["v2"] / "conda.yml").read_text())
    assert green.environment.conda_file == conda and "agent-framework-core==1.23.0" in conda["dependencies"][2]["pip"]
    assert green.environment_variables == {
        "LLMOPS_USE_CASE": "web_classification_maf", "LLMOPS_DEPLOYMENT": "green", "LLMOPS_VARIANT": "v2",
    }  # fmt: skip
    assert green.tags["flow_sha256"] == bake.flow_sha256(flows["v2"]) != blue.tags["flow_sha256"]
    assert record["models"]["v2"]["registered"] is False and record["traffic"] == {"green": 10, "blue": 90}
    settings = json.loads((flows["v2"] / "llmops_run.json").read_text())
    assert settings["params"] == {"prompt": "classify_v2.jinja2", "temperature": 0, "max_tokens": 4}
    assert settings["inputs"] == {"url": "url", "text": "text"} and "OPENAI_API_KEY" not in settings["env"]
    assert "azureml-inference-server-http>=1.3.0" in conda["dependencies"][2]["pip"]
    with pytest.raises(SpecError, match="target kubernetes: web_classification_maf is a MAF workflow"):
        package.baked_flows(dataclasses.replace(spec, target="kubernetes"), params, tmp_path / "k8s")
