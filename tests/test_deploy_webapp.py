"""Target webapp: a real `pf flow build --format docker` per variant and the generated az CLI script.
No Docker engine or az CLI runs here: the test checks the build contexts are complete and the script says
what it should (and is valid bash)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from context_probe import probe

from stages.core.project import load_params
from stages.deploy import webapp
from stages.deploy.spec import load_spec
from stages.engine import bake

ROOT = Path(__file__).resolve().parents[1]
CANARY = "sk-canary-webapp-7d3e"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    params = load_params(ROOT)
    spec = load_spec(ROOT, "web_classification", "dev", "webapp", params)
    out = tmp_path_factory.mktemp("webapp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_API_KEY", CANARY)  # a key in the deploying shell must not reach the context
        record = webapp.build(spec, params, out)
    return spec, record, out


def test_each_variant_gets_a_complete_docker_context(built: tuple) -> None:
    _, record, out = built
    assert set(record["contexts"]) == {"v2", "v1"}
    for variant in ("v1", "v2"):
        context = out / "images" / variant
        for name in ("Dockerfile", "start.sh", "settings.json", "connections/llm.yaml", "runit/promptflow-serve/run"):
            assert (context / name).is_file(), f"{variant}: {name} missing"
        flow_files = {p.relative_to(context / "flow").as_posix() for p in (context / "flow").rglob("*") if p.is_file()}
        source = {p.name for p in (ROOT / "use_cases/web_classification/flows/classify").iterdir() if p.is_file()}
        assert source <= flow_files
        dockerfile = (context / "Dockerfile").read_text()
        assert "COPY ./flow /flow" in dockerfile and "COPY ./connections /connections" in dockerfile
        assert "EXPOSE 8080" in dockerfile and "pip install -r /flow/requirements.txt" in dockerfile
        assert (
            f"promptflow=={importlib.metadata.version('promptflow')}" in (context / "flow/requirements.txt").read_text()
        )
        node = yaml.safe_load((context / "flow/flow.dag.yaml").read_text())["nodes"][0]
        assert node["source"]["path"] == f"classify_{variant}.jinja2"  # the variant is baked into the flow
        assert node["inputs"]["max_tokens"] == {"v1": 6, "v2": 4}[variant]
    connection = yaml.safe_load((out / "images/v2/connections/llm.yaml").read_text())
    assert connection["api_key"] == "${env:LLM_API_KEY}" and connection["name"] == "llm"
    everything = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert CANARY not in everything and "placeholder" not in everything


def test_the_script_builds_creates_and_routes(built: tuple) -> None:
    _, record, out = built
    text = (out / "deploy.sh").read_text()
    subprocess.run(["bash", "-n", str(out / "deploy.sh")], check=True)  # valid bash
    v1, v2 = (bake.flow_sha256(out / "flows" / v)[:12] for v in ("v1", "v2"))
    assert record["images"] == {"v2": f"web-classification:{v2}", "v1": f"web-classification:{v1}"}
    assert f'az acr build --registry "$REGISTRY" --image web-classification:{v2} "$HERE/images/v2"' in text
    assert f'az acr build --registry "$REGISTRY" --image web-classification:{v1} "$HERE/images/v1"' in text
    assert 'RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:?' in text and 'REGISTRY="${AZURE_CONTAINER_REGISTRY:?' in text
    assert "APP=web-classification-dev" in text
    assert "--sku B1 --is-linux" in text
    assert f'--deployment-container-image-name "$REGISTRY.azurecr.io/web-classification:{v1}"' in text  # blue
    assert 'az webapp deployment slot create --name "$APP" --resource-group "$RESOURCE_GROUP" --slot green' in text
    assert f'--slot green --container-image-name "$REGISTRY.azurecr.io/web-classification:{v2}"' in text
    green_settings = next(line for line in text.splitlines() if "appsettings set" in line and "--slot green" in line)
    assert green_settings.endswith(
        "--settings WEBSITES_PORT=8080 LLMOPS_USE_CASE=web_classification LLMOPS_DEPLOYMENT=green "
        'LLMOPS_VARIANT=v2 LLM_API_KEY="$LLM_API_KEY"'
    )
    assert text.rstrip().endswith("--distribution green=10")  # production (blue) takes the other 90
    assert text.index("az acr build") < text.index("appservice plan create") < text.index("traffic-routing set")


def test_rollback_routes_the_previous_split(built: tuple, tmp_path: Path) -> None:
    spec, _, _ = built
    assert webapp.routing_command(spec, {"green": 0, "blue": 100}).endswith("--distribution green=0")
    (tmp_path / ".llmops").mkdir()
    record = webapp.rollback(spec, tmp_path, {"weights": {"green": 50, "blue": 50}})
    script = Path(record["script"])
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert script.read_text().rstrip().endswith("--distribution green=50")


# The project modules each flow's code imports (vendored into its context), and whether it is a flex flow that
# the probe serves (a DAG flow's LLM nodes need the image's `pf connection create`, so those are imported only).
FLOWS = {
    "chat": (set(), True),
    "code_generation": ({"stages", "stages.core", "stages.core.sandbox"}, True),
    "chat_with_pdf": ({"stages", "stages.core", "stages.core.io", "stages.core.redaction", "stages.data",
                       "stages.data.embeddings", "stages.data.vector_index"}, False),
    "math_coding": ({"stages", "stages.core", "stages.core.sandbox"}, False),
}  # fmt: skip


@pytest.mark.parametrize("use_case", sorted(FLOWS))
def test_each_context_runs_its_flow_without_the_project_installed(use_case: str, stub_llm: Any, tmp_path: Path) -> None:
    """Flex flows (class and function entry) and flows importing `stages` build, import with only the context
    on sys.path, and a flex flow answers the sample request through prompt flow's serving app, on the stub LLM
    with the key from LLM_API_KEY."""
    params = load_params(ROOT)
    params["llm"] = {**params["llm"], "base_url": stub_llm.base_url}
    spec = load_spec(ROOT, use_case, "dev", "webapp", params)
    record = webapp.build(spec, params, tmp_path / "out")
    modules, serve = FLOWS[use_case]
    request = json.loads((ROOT / f"use_cases/{use_case}/sample-request.json").read_text())
    declared = set(yaml.safe_load((ROOT / params["use_cases"][use_case]["flow"] / "flow.flex.yaml").read_text())
                   ["outputs"]) if serve else set()  # fmt: skip
    before = len(stub_llm.requests())
    for variant, context in record["contexts"].items():
        dockerfile = (Path(context) / "Dockerfile").read_text()
        assert "python=3.11 " in dockerfile and "pip install -r /flow/requirements.txt" in dockerfile
        result = probe(Path(context), request if serve else None, {"LLM_API_KEY": CANARY}, tmp_path)
        assert result["outside"] == [] and set(result["stages"]) == modules, variant
        if serve:
            assert result["status"] == 200 and set(result["body"]) == declared, (variant, result)
    if serve:  # each variant's request reached the LLM with the key from the environment
        sent = stub_llm.requests()[before:]
        assert len(sent) == 2 and all(
            {k.lower(): v for k, v in r["headers"].items()}["authorization"] == f"Bearer {CANARY}" for r in sent
        )
