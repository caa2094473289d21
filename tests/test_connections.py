"""Connections: secrets only from env/.env, never written anywhere; `llm=` switches every use case."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import Project, StubLLM

from stages.core import connections

UC = "web_classification"


def test_dotenv_parsing(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nexport A=1\nB = \"two words\"\nC='x#y'\nD=plain # trailing comment\n\nnot a line\n")
    assert connections.read_dotenv(env_file) == {"A": "1", "B": "two words", "C": "x#y", "D": "plain"}


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=from-file\nOTHER=file\n")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    env = connections.environment(tmp_path)
    assert env["OPENAI_API_KEY"] == "from-env" and env["OTHER"] == "file"


def test_missing_secret_names_connection_and_variable() -> None:
    llm = {
        "name": "azure_openai",
        "type": "azure_openai",
        "api": "chat",
        "model": "m",
        "endpoint_env": "AZURE_OPENAI_ENDPOINT",
        "api_key_env": "AZURE_OPENAI_API_KEY",
        "api_version": "v",
    }
    with pytest.raises(connections.ConnectionConfigError, match=r"'azure_openai'.*AZURE_OPENAI_ENDPOINT"):
        connections.resolve(llm, {})
    with pytest.raises(connections.ConnectionConfigError, match="AZURE_OPENAI_API_KEY"):
        connections.resolve(llm, {"AZURE_OPENAI_ENDPOINT": "https://x"})


def test_repr_never_shows_the_key() -> None:
    llm = {"name": "openai", "type": "openai", "api": "chat", "model": "m", "base_url": "https://x/v1",
           "api_key_env": "K"}  # fmt: skip
    connection = connections.resolve(llm, {"K": "sk-very-secret-value"})
    assert "sk-very-secret-value" not in repr(connection)
    assert connections.redact("bad key sk-very-secret-value!", connection.secrets) == "bad key ***!"


def test_unreachable_endpoint_fails_fast_naming_the_connection() -> None:
    llm = {"name": "local", "type": "openai", "api": "completion", "model": "m",
           "base_url": "http://127.0.0.1:9/v1", "api_key_env": "K", "api_key_required": False}  # fmt: skip
    with pytest.raises(
        connections.ConnectionConfigError, match=r"'local': cannot reach http://127\.0\.0\.1:9.*make llm"
    ):
        connections.check_reachable(connections.resolve(llm, {}))


def written_files(root: Path) -> list[Path]:
    skip = {".git", ".venv"}
    return [p for p in root.rglob("*") if p.is_file() and not skip & set(p.relative_to(root).parts)]


def test_canary_key_is_used_but_never_written(project: Project, stub_llm: StubLLM) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    (project.root / ".env").write_text(f"LOCAL_LLM_API_KEY={canary}\n")
    result = project.sh("dvc", "repro")
    requests = stub_llm.requests()
    assert requests and all(r["headers"].get("authorization") == f"Bearer {canary}" for r in requests)

    assert canary not in result.stdout + result.stderr
    leaks = [p for p in written_files(project.root) if p.name != ".env" and canary.encode() in p.read_bytes()]
    assert leaks == []
    git_leaks = project.sh("git", "grep", "-l", canary, check=False)
    assert git_leaks.stdout == ""
    assert (project.root / "data" / UC / "report" / "report.html").is_file()  # the pipeline did write files


@pytest.mark.parametrize("llm", ["openai", "azure_openai"])
def test_llm_switch_reaches_every_use_case(project: Project, stub_llm: StubLLM, llm: str) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    if llm == "openai":
        env = {"OPENAI_API_KEY": canary}
        config = project.root / "conf" / "llm" / "openai.yaml"
        config.write_text(config.read_text().replace("https://api.openai.com/v1", stub_llm.base_url))
    else:
        env = {"AZURE_OPENAI_ENDPOINT": stub_llm.base_url.removesuffix("/v1"), "AZURE_OPENAI_API_KEY": canary}
    project.env.update(env)
    project.params(f"llm={llm}", "env=pr")
    project.sh("dvc", "repro")

    requests = stub_llm.requests()
    use_cases = yaml.safe_load((project.root / "params.yaml").read_text())["use_cases"]
    # Every request the flows made, counted by the LLM cache: the pr subset of every use case, chat_with_pdf's
    # rewrite node, chat's three judges and chat_with_pdf's one. The stub saw only the misses: a judge prompt that
    # repeats (the stub's answers repeat) is answered by the cache.
    made, missed = {"run": 0, "eval": 0}, {"run": 0, "eval": 0}
    for use_case in use_cases:
        for stage, counted in (("run", "run/operations.json"), ("eval", "eval/operations.json")):
            if cache := json.loads((project.root / "data" / use_case / counted).read_text()).get("cache"):
                made[stage] += cache["hits"] + cache["misses"]
                missed[stage] += cache["misses"]
    assert len(use_cases) == 7 and made == {"run": 12 * len(use_cases) + 12, "eval": 4 * 12}
    assert len(requests) == sum(missed.values())
    rubric = "Reply with one digit from 1 to 5 and nothing else."  # the judges get the chat rubrics
    assert sum(request["body"]["messages"][0]["content"].endswith(rubric) for request in requests) == missed["eval"]
    for request in requests:
        assert request["body"]["messages"], "chat models get the prompt as messages"
        if llm == "openai":
            assert request["path"] == "/v1/chat/completions"
            assert request["headers"]["authorization"] == f"Bearer {canary}"
            assert request["body"]["model"] == "gpt-4o-mini"
        else:
            assert request["path"] == "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
            assert request["headers"]["api-key"] == canary
    params_text = (project.root / "params.yaml").read_text() + (project.root / "dvc.lock").read_text()
    assert canary not in params_text and stub_llm.base_url not in params_text * (llm == "azure_openai")
