"""The Azure Blob DVC remote: credentials only from the environment, and a push/pull round trip on Azurite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import REPO, Azurite, Project, StubLLM

from stages.core import remote

# A DAG flow, a prompty flow and a flex flow whose evaluation has LLM judges (every way a flow reaches the LLM), and
# chat_with_pdf with the documents' stages (which `Project.only` keeps): the catalogue the round trip pushes.
USE_CASES = ("web_classification", "general_qa", "chat")
OUTPUTS = ("prepared.jsonl", "run/outputs/v1.jsonl", "run/summary.json", "eval/rows/v1.jsonl", "eval/metrics.json",
           "report/report.csv", "report/report.html")  # fmt: skip


def tracked_data(root: Path) -> dict[str, bytes]:
    """Every dataset and pipeline output, by path."""
    paths = [*root.glob("use_cases/*/data/*.jsonl"), *(p for p in (root / "data").rglob("*") if p.is_file())]
    return {str(path.relative_to(root)): path.read_bytes() for path in paths}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def entries(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("*.json"))]


def files_containing(secret: str, *roots: Path) -> list[Path]:
    needle = secret.encode()
    return [path for root in roots for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_remote_check_wants_credentials_from_the_environment_or_config_local(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    with pytest.raises(remote.RemoteError, match="AZURE_STORAGE_CONNECTION_STRING"):
        remote.check(tmp_path, environ={})  # the committed config holds no credentials
    found = remote.check(tmp_path, environ={remote.CONNECTION_STRING_ENV: "AccountKey=s3cret"})
    assert found.name == "azure" and found.url.startswith("azure://") and "s3cret" not in str(found)
    (tmp_path / ".dvc" / "config.local").write_text("['remote \"azure\"']\n    connection_string = AccountKey=s3cret\n")
    assert remote.check(tmp_path, environ={}).credentials == ".dvc/config.local"
    assert remote.check(tmp_path, "examples", environ={}).credentials == "none needed"


@pytest.mark.pipeline
def test_push_wipe_cache_and_pull_into_a_fresh_clone(
    reproduced: Project, azurite: Azurite, tmp_path: Path, stub_llm: StubLLM
) -> None:
    project = reproduced  # every stage reproduced: the results a team pushes (of a smaller catalogue, committed)
    project.only(*USE_CASES)
    kept = {*USE_CASES, "chat_with_pdf", "_code"}  # and the code stages' manifests
    for folder in (project.root / "data").iterdir():  # the outputs of the use cases left out are no results of it
        if folder.is_dir() and folder.name not in kept:
            shutil.rmtree(folder)
    project.commit("the catalogue the team pushes")
    name = project.sh("dvc", "config", "core.remote").stdout.strip()
    azurite.create_container(urlparse(project.sh("dvc", "config", f"remote.{name}.url").stdout.strip()).netloc)
    with_secret = {**project.env, remote.CONNECTION_STRING_ENV: azurite.connection_string}  # env only, never a file

    pusher = Project(project.root, with_secret)
    logs = [pusher.sh("llmops", "remote", "check"), pusher.sh("dvc", "push", "--run-cache")]
    before = tracked_data(project.root)
    assert {f"data/{uc}/{out}" for uc in USE_CASES for out in OUTPUTS} <= set(before)
    shutil.rmtree(project.root / ".dvc" / "cache")

    clone = Project(tmp_path / "clone", with_secret)
    project.sh("git", "clone", "-q", str(project.root), str(clone.root))
    assert not (clone.root / "data" / "web_classification" / "prepared.jsonl").exists()
    logs.append(clone.sh("dvc", "pull", "--run-cache"))

    assert tracked_data(clone.root) == before
    assert json.loads(clone.sh("dvc", "status", "--json").stdout) == {}
    assert any((clone.root / ".dvc" / "cache" / "runs").rglob("*")), "the run-cache came along"
    assert clone.repro() == []
    # The row-level LLM cache came along too, every entry whole: forced reruns of the LLM stages ask the LLM nothing.
    cache_dirs = sorted(p.relative_to(project.root) for p in project.root.glob("data/*/*/llm_cache"))
    assert len(cache_dirs) == 2 * len(list((project.root / "data").glob("*/prepared.jsonl")))  # run and evaluate
    for folder in cache_dirs:
        assert entries(clone.root / folder) == entries(project.root / folder)
    asked = len(stub_llm.requests())
    llm_stages = [f"run@{uc}" for uc in USE_CASES] + ["evaluate@chat"]
    logs.append(clone.sh("dvc", "repro", "--force", "--single-item", *llm_stages))
    assert len(stub_llm.requests()) == asked
    chat = clone.root / "data" / "chat"
    rows = [json.loads(line) for line in (chat / "run" / "outputs" / "v1.jsonl").read_text().splitlines()]
    run, run_operations = read_json(chat / "run" / "summary.json"), read_json(chat / "run" / "operations.json")
    assert run_operations["cache"] == {"hits": len(rows), "misses": 0, "errors": 0} and len(rows) == 46
    assert run_operations["llm_requests"]["upstream"] == 0
    assert run["tokens"]["prompt"] == run_operations["tokens"]["prompt_cached"] > 0
    assert read_json(chat / "eval" / "operations.json")["cache"] == {"hits": 3 * len(rows), "misses": 0, "errors": 0}
    assert all(row["llm"]["requests"] == row["llm"]["cache_hits"] == 1 for row in rows)
    home = Path(project.env["HOME"])
    assert not files_containing(azurite.account_key, project.root, clone.root, home)
    assert not [log.args for log in logs if azurite.account_key in log.stdout + log.stderr]
