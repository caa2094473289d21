"""What the cloud targets ship: each variant baked into a copy of the flow, and the copy's content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stages.core import flow_engine
from stages.core.project import load_params
from stages.deploy import package

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT)
AZURE_LLM = {"name": "azure_openai", "type": "azure_openai", "api": "chat", "model": "gpt-4o-mini",
             "endpoint_env": "AZURE_OPENAI_ENDPOINT", "api_version": "2024-10-21"}  # fmt: skip


def _bake(use_case: str, variant: str, dest: Path, llm: dict | None = None) -> Path:
    uc = PARAMS["use_cases"][use_case]
    return package.bake_variant(ROOT / uc["flow"], uc["variants"][variant], llm or PARAMS["llm"], dest)


def _front_matter(file: Path) -> dict:
    return yaml.safe_load(file.read_text().split("---", 2)[1])


def test_the_hash_covers_paths_and_bytes_but_not_scratch_folders(tmp_path: Path) -> None:
    flow = shutil.copytree(ROOT / "use_cases/web_classification/flows/classify", tmp_path / "f")
    before = package.flow_sha256(flow)
    (flow / "__pycache__").mkdir()
    (flow / "__pycache__/x.pyc").write_bytes(b"\0")
    (flow / ".promptflow").mkdir()
    (flow / ".promptflow/flow.tools.json").write_text("{}")
    assert package.flow_sha256(flow) == before
    (flow / "labels.py").rename(flow / "labels2.py")
    assert package.flow_sha256(flow) != before  # a renamed file is another flow


def test_a_dag_variant_is_written_into_its_llm_node(tmp_path: Path) -> None:
    flow = _bake("web_classification", "v2", tmp_path / "v2", AZURE_LLM)
    node = yaml.safe_load((flow / "flow.dag.yaml").read_text())["nodes"][0]
    assert (node["source"]["path"], node["api"], node["connection"]) == ("classify_v2.chat.jinja2", "chat", "llm")
    assert (node["inputs"]["deployment_name"], node["inputs"]["max_tokens"]) == ("gpt-4o-mini", 4)
    assert package.flow_sha256(flow) == package.flow_sha256(
        _bake("web_classification", "v2", tmp_path / "again", AZURE_LLM)
    )
    assert package.flow_sha256(flow) != package.flow_sha256(
        _bake("web_classification", "v1", tmp_path / "v1", AZURE_LLM)
    )


def test_a_prompty_variant_keeps_one_file_with_a_configuration_of_env_references(tmp_path: Path) -> None:
    flow = _bake("general_qa", "v2", tmp_path / "v2", AZURE_LLM)
    assert flow.name == "answer_chat.prompty" and sorted(p.name for p in flow.parent.glob("*.prompty")) == [flow.name]
    model = _front_matter(flow)["model"]
    assert model["configuration"] == {
        "type": "azure_openai", "azure_endpoint": "${env:AZURE_OPENAI_ENDPOINT}", "api_key": "${env:LLM_API_KEY}",
        "azure_deployment": "gpt-4o-mini", "api_version": "2024-10-21",
    }  # fmt: skip
    assert model["api"] == "chat" and model["parameters"]["max_tokens"] == 12


def test_a_class_flex_variant_becomes_init_defaults_and_a_function_entry_is_refused(tmp_path: Path) -> None:
    flow = _bake("chat", "v2", tmp_path / "chat")
    init = yaml.safe_load((flow / "flow.flex.yaml").read_text())["init"]
    assert {k: init[k].get("default") for k in ("api", "prompt", "max_tokens", "max_turns")} == {
        "api": "completion", "prompt": "assistant_brief.prompty", "max_tokens": 24, "max_turns": 2
    }  # fmt: skip
    assert "default" not in (init["model_config"] or {})
    with pytest.raises(flow_engine.FlowError, match=r"function entry .* class entry with `init`"):
        _bake("code_generation", "v1", tmp_path / "code")
