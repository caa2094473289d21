"""Connections: secrets only from env/.env, never written anywhere; `llm=` switches every use case."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project, Reproduced, StubLLM

from stages.core import redaction
from stages.llm import connections

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


def test_repr_never_shows_the_key_and_the_key_read_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_secrets", ())  # the registry is process-wide: this test's only
    llm = {"name": "openai", "type": "openai", "api": "chat", "model": "m", "base_url": "https://x/v1",
           "api_key_env": "K"}  # fmt: skip
    connection = connections.resolve(llm, {"K": "sk-very-secret-value"})
    assert "sk-very-secret-value" not in repr(connection)
    assert redaction.redact("bad key sk-very-secret-value!") == "bad key ***!"
    keyless = connections.resolve({**llm, "api_key_required": False, "api_key_env": "UNSET"}, {})
    assert keyless.api_key == connections.NO_KEY and keyless.secrets == ()  # the placeholder is no secret
    assert redaction.secrets() == ("sk-very-secret-value",)


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


def test_canary_key_is_used_but_never_written(reproduced_build: Reproduced) -> None:
    # The session's project ran the whole catalogue with a canary key in .env (tests/conftest.py `_reproduce`).
    project, canary = reproduced_build, reproduced_build.canary
    requests = reproduced_build.requests
    assert requests and all(r["headers"].get("authorization") == f"Bearer {canary}" for r in requests)

    assert canary not in reproduced_build.console
    leaks = [p for p in written_files(project.root) if p.name != ".env" and canary.encode() in p.read_bytes()]
    assert leaks == []
    git_leaks = subprocess.run(["git", "grep", "-l", canary], cwd=project.root, capture_output=True, text=True)
    assert git_leaks.returncode == 1 and git_leaks.stdout == ""  # 1: nothing found (not an error)
    assert (project.root / "data" / UC / "report" / "report.html").is_file()  # the pipeline did write files


@pytest.mark.pipeline
@pytest.mark.parametrize("llm", ["openai", "azure_openai"])
def test_llm_switch_reaches_every_use_case(reproduced: Project, stub_llm: StubLLM, llm: str) -> None:
    project = reproduced  # the documents' index is built already: the switch reruns what the LLM answers
    canary = f"canary-{uuid.uuid4().hex}"
    if llm == "openai":  # OPENAI_BASE_URL, the OpenAI SDK's own variable (gateways, LiteLLM, vLLM, Ollama)
        env = {"OPENAI_API_KEY": canary, "OPENAI_BASE_URL": stub_llm.base_url}
    else:
        env = {"AZURE_OPENAI_ENDPOINT": stub_llm.base_url.removesuffix("/v1"), "AZURE_OPENAI_API_KEY": canary}
    project.env.update(env)
    every = tuple(yaml.safe_load((project.root / "params.yaml").read_text())["use_cases"])
    assert len(every) == 9  # seven use cases and two MAF migrations of them
    # OpenAI: every use case (each has its own chat-API prompt). Azure OpenAI binds per flow kind, so one use case
    # of each kind: DAG, prompty, flex class (with the judges) and flex function.
    use_cases = every if llm == "openai" else ("web_classification", "general_qa", "chat", "code_generation")
    project.only(*use_cases, overrides=(f"llm={llm}",))
    # Each use case's flow, and the evaluations that ask LLM judges (the others, and the reports, ask no LLM).
    judged = {"chat", "chat_with_pdf"} & set(use_cases)
    targets = {f"run@{uc}" for uc in use_cases} | {f"evaluate@{uc}" for uc in judged}
    if llm == "openai":  # the commands DVC runs, without its lock rewrites: what reruns is the Azure case's to show
        project.run_stages(*sorted(targets, key=lambda name: name.startswith("evaluate@")))
    else:
        assert set(project.repro(*sorted(targets))) == targets  # prepare stays: the switch changes no rows
    rows = {uc: len((project.root / "data" / uc / "prepared.jsonl").read_text().splitlines()) for uc in use_cases}

    requests = stub_llm.requests()
    # Every request the flows made, counted by the LLM cache: every row of every use case, chat_with_pdf's
    # rewrite node, chat's three judges and chat_with_pdf's one. The stub saw only the misses: a judge prompt that
    # repeats (the stub's answers repeat) is answered by the cache.
    made, missed = {"run": 0, "eval": 0}, {"run": 0, "eval": 0}
    for use_case in use_cases:
        for stage, counted in (("run", "run/operations.json"), ("eval", "eval/operations.json")):
            if cache := json.loads((project.root / "data" / use_case / counted).read_text()).get("cache"):
                made[stage] += cache["hits"] + cache["misses"]
                missed[stage] += cache["misses"]
    rag = rows.get("chat_with_pdf", 0)  # a rewrite beside each answer, and a judgement
    assert made == {"run": sum(rows.values()) + rag, "eval": 3 * rows["chat"] + rag}
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
    # Neither the key nor the endpoint (both from the environment) is in params.yaml or dvc.lock.
    assert canary not in params_text and stub_llm.base_url.removesuffix("/v1") not in params_text


def test_a_key_the_llm_echoes_back_reaches_no_console_log_or_file(project: Project, stub_llm: StubLLM) -> None:
    """An LLM server that answers 401 with the key in its message, as OpenAI and gateways do: prompt flow's log lines
    and tracebacks show *** in the run's console (in process and from worker processes), in a local deployment's
    logs (readable by their owner only) and in every file under the project and HOME."""
    from conftest import post_json

    from stages.deploy import local, state

    canary, endpoint_key = f"sk-canary-{uuid.uuid4().hex}", f"endpoint-canary-{uuid.uuid4().hex}"
    (project.root / ".env").write_text(f"LOCAL_LLM_API_KEY={canary}\nLLMOPS_ENDPOINT_KEY={endpoint_key}\n")
    stub_llm.faults(echo_key_status=401)
    repro = project.sh("dvc", "repro", f"run@{UC}", check=False)
    # The run stage's main again, its rows spread over worker processes; its outputs stay (DVC removes a failed
    # stage's outputs).
    project.params("bulk.processes=2", "llm.concurrency=2")
    out = ("--out", f"data/{UC}/run/outputs", "--summary", f"data/{UC}/run/summary.json")
    workers = project.sh("python", "-m", "stages.run", "--use-case", UC, "--rows", f"data/{UC}/prepared.jsonl", *out,
                         "--operations", f"data/{UC}/run/operations.json", "--cache", f"data/{UC}/run/llm_cache",
                         check=False)  # fmt: skip
    for result in (repro, workers):
        assert result.returncode != 0 and "Incorrect API key provided: ***" in result.stderr  # echoed, then masked
    assert "over 2 processes" in workers.stderr and "execution" in workers.stdout + workers.stderr
    consoles = [repro.stdout + repro.stderr, workers.stdout + workers.stderr]
    echoed = [r for r in stub_llm.requests() if r["fault"] == 401]
    assert echoed and all(r["headers"]["authorization"] == f"Bearer {canary}" for r in echoed)
    rows = (project.root / "data" / UC / "run" / "outputs" / "v1.jsonl").read_text().splitlines()
    assert rows and all("Incorrect API key provided: ***" in json.loads(row)["error"] for row in rows)

    deployed = project.sh("llmops", "deploy", "--use-case", UC)
    try:
        record = json.loads(state.path(project.root, "dev", UC).read_text())["targets"]["local"]["current"]["record"]
        for _ in range(4):
            auth = {"Authorization": f"Bearer {endpoint_key}"}
            status, _, body = post_json(record["url"], {"url": "u", "text": "t"}, auth)
            assert status == 500 and "Incorrect API key provided: ***" in body["error"]
    finally:
        undeployed = project.sh("llmops", "undeploy", "--use-case", UC)
    logs = sorted((local.runtime(project.root, "dev", UC) / "logs").glob("*.log"))
    assert [log.name for log in logs] == ["blue.log", "green.log", "router.log"]
    assert "Incorrect API key provided: ***" in "".join(log.read_text() for log in logs)  # prompt flow logged it
    assert all(log.stat().st_mode & 0o777 == 0o600 for log in logs)

    console = "".join(consoles) + deployed.stdout + deployed.stderr + undeployed.stdout + undeployed.stderr
    assert canary not in console and endpoint_key not in console
    files = written_files(project.root) + written_files(Path(project.env["HOME"]))
    assert project.root / ".llmops" / "pf" / "pf.yaml" in files and logs[0] in files  # prompt flow's home is searched
    keys = (canary.encode(), endpoint_key.encode())
    leaks = [p for p in files if p.name != ".env" and any(key in p.read_bytes() for key in keys)]
    assert leaks == []


def test_an_endpoint_variable_wins_over_the_default_and_stays_out_of_params() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    openai = {**params["llm"], **yaml.safe_load((REPO / "conf" / "llm" / "openai.yaml").read_text())}
    env = {"OPENAI_API_KEY": "sk-test"}
    assert connections.resolve(openai, env).base_url == "https://api.openai.com/v1"
    gateway = connections.resolve(openai, {**env, "OPENAI_BASE_URL": "http://127.0.0.1:4000/v1/"})
    assert gateway.base_url == "http://127.0.0.1:4000/v1" and gateway.model == "gpt-4o-mini"
    local = connections.resolve(params["llm"], {"LOCAL_LLM_BASE_URL": "http://10.0.0.5:8080/v1"})
    assert params["llm"]["base_url_env"] == "LOCAL_LLM_BASE_URL" and local.base_url == "http://10.0.0.5:8080/v1"
    assert connections.resolve(params["llm"], {"LOCAL_LLM_BASE_URL": " "}).base_url == params["llm"]["base_url"]
