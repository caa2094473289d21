"""A misconfigured or unreachable connection stops the run and evaluate stages before their first row, with a
message naming the connection and the endpoint (or the missing variable), never the key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO

CANARY = "sk-canary-4f1d9a7e"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


def params_with(**blocks: dict[str, Any]) -> dict[str, Any]:
    """The repo's params with some top-level blocks (llm, judge) replaced."""
    return {**yaml.safe_load((REPO / "params.yaml").read_text()), **blocks}


def unreachable_local() -> tuple[dict[str, Any], int]:
    port = free_port()
    return {**params_with()["llm"], "base_url": f"http://127.0.0.1:{port}/v1"}, port


def stage(tmp_path: Path, name: str, use_case: str, params: dict[str, Any], env: dict[str, str]):
    """Run `python -m stages.<name>` in a minimal project with these params; returns the finished process."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("# test project\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "prepared.jsonl").write_text('{"row_id": "r0", "question": "Hi?", "chat_history": []}\n')
    outputs = ["--out", "out", "--cache", "cache"]
    if name == "run":
        outputs += ["--summary", "summary.json", "--operations", "operations.json"]
    else:
        outputs += ["--run", "run", "--metrics", "metrics.json", "--operations", "operations.json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_", "LOCAL_LLM_"))}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", "--use-case", use_case, "--rows", "prepared.jsonl", *outputs],
        cwd=tmp_path, env={**clean, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_run_stops_before_the_first_row_when_the_endpoint_is_unreachable(tmp_path: Path) -> None:
    llm, port = unreachable_local()
    result = stage(tmp_path, "run", "general_qa", params_with(llm=llm), {"LOCAL_LLM_API_KEY": CANARY})
    assert result.returncode == 1
    assert f"run: connection 'local': cannot reach http://127.0.0.1:{port} (" in result.stderr
    assert "make llm" in result.stderr  # what to do about the embedded LLM
    assert CANARY not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "summary.json").exists()  # no row ran


def test_run_names_the_missing_key_variable_and_stops(tmp_path: Path) -> None:
    openai = yaml.safe_load((REPO / "conf" / "llm" / "openai.yaml").read_text())
    result = stage(tmp_path, "run", "general_qa", params_with(llm=openai), {})
    assert result.returncode == 1
    assert "run: connection 'openai': environment variable OPENAI_API_KEY is not set" in result.stderr
    assert not (tmp_path / "out").exists()


def test_evaluate_stops_when_the_judge_is_unreachable(tmp_path: Path) -> None:
    judge, port = unreachable_local()
    result = stage(tmp_path, "evaluate", "chat", params_with(judge=judge), {"LOCAL_LLM_API_KEY": CANARY})
    assert result.returncode == 1
    assert f"evaluate chat: judge: connection 'local': cannot reach http://127.0.0.1:{port} (" in result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics.json").exists()
