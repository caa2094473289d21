"""The embedded LLM service: refuses a port held by another program; starts, reuses and stops llama.cpp."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import StubLLM, http_server
from stub_llm import reply_json

from stages.llm import llm_server


def settings(port: int, alias: str = "gemma-3-270m") -> llm_server.ServerSettings:
    return llm_server.ServerSettings(host="127.0.0.1", port=port, model_alias=alias, n_ctx=512, startup_timeout_s=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_cpp_routes(alias: str, busy_s: float = 0.0) -> Iterator[int]:
    """A server with the two routes of llama-cpp-python's server that the probe reads (the real one is the slow
    tier's test_start_reuse_complete_and_stop_the_embedded_model). `busy_s`: how long /v1/models waits, as
    llama-cpp-python's does while other requests hold the model; its API description answers at once."""
    api = {"info": {"title": "🦙 llama.cpp Python API"}, "paths": {"/v1/models": {}, "/extras/tokenize/count": {}}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/models":
                time.sleep(busy_s)
                body = {"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "me"}]}
            else:
                assert self.path == "/openapi.json"
                body = api
            reply_json(self, 200, body)

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as port:
        yield port


def test_probe_tells_free_ours_and_foreign(stub_llm: StubLLM) -> None:
    assert llm_server.probe(settings(free_port())) is llm_server.PortState.FREE
    with llama_cpp_routes("gemma-3-270m") as port:
        assert llm_server.probe(settings(port)) is llm_server.PortState.OURS
        assert llm_server.probe(settings(port, alias="another-model")) is llm_server.PortState.FOREIGN
    # The stub LLM lists our alias too, but is not llama.cpp's server: a pipeline run on it would be no run at all.
    assert llm_server.probe(settings(stub_llm.port)) is llm_server.PortState.FOREIGN
    assert llm_server.probe(settings(stub_llm.port, alias="another-model")) is llm_server.PortState.FOREIGN


def test_start_reuses_our_server_while_it_is_busy(tmp_path: Path) -> None:
    """Another clone's pipeline keeps the model busy: its queued completions go first, then the probe's /v1/models
    (the old probe gave up after 2 s and called our own server foreign)."""
    with llama_cpp_routes("gemma-3-270m", busy_s=3.0) as port:
        assert llm_server.start(settings(port), tmp_path) == "reused"
    assert not (tmp_path / "llm-server.json").exists()


def test_start_refuses_an_openai_compatible_server_that_lists_our_alias(stub_llm: StubLLM, tmp_path: Path) -> None:
    with pytest.raises(llm_server.ServerError, match=rf"port {stub_llm.port} .* not the embedded LLM \(llama.cpp"):
        llm_server.start(settings(stub_llm.port), tmp_path)
    assert not (tmp_path / "llm-server.json").exists() and not (tmp_path / "models").exists()


def test_llama_cpp_reads_our_command_as_meant(tmp_path: Path) -> None:
    """llama_cpp.server's own parser: the model, alias, port and context we give, and no logits for each prompt
    token (its default computes them: about half the server's CPU on our prompts, benchmarks/llm_server.py)."""
    import argparse

    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    command = llm_server.server_command(settings(8799), tmp_path / "m.gguf")
    assert command[:3] == [sys.executable, "-m", "llama_cpp.server"]
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    args = parser.parse_args(command[3:])
    model, server = parse_model_from_args(ModelSettings, args), parse_model_from_args(ServerSettings, args)
    assert (model.model, model.model_alias, model.n_ctx) == (str(tmp_path / "m.gguf"), "gemma-3-270m", 512)
    assert (server.host, server.port) == ("127.0.0.1", 8799)
    assert model.logits_all is False and ModelSettings(model="m").logits_all is True  # ours, then the default


def test_start_refuses_a_port_held_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a plain TCP listener that is not an LLM server at all
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(llm_server.ServerError, match=rf"port {port} .* not the embedded LLM"):
            llm_server.start(settings(port), tmp_path)
    assert not (tmp_path / "llm-server.json").exists()


def test_stop_without_a_server_is_a_no_op(tmp_path: Path) -> None:
    assert llm_server.stop(tmp_path) is False


def test_stop_never_kills_a_process_that_is_not_our_server(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "llm-server.json").write_text(json.dumps({"pid": bystander.pid}))
        assert llm_server.stop(tmp_path) is False
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_start_reuse_complete_and_stop_the_embedded_model(tmp_path: Path) -> None:
    config = settings(free_port())
    try:
        assert llm_server.start(config, tmp_path) == "started"
        assert llm_server.start(config, tmp_path) == "reused"
        prompt = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA:"
        body = json.dumps({"model": config.model_alias, "prompt": prompt, "max_tokens": 4, "temperature": 0,
                           "stop": ["\n"]}).encode()  # fmt: skip
        request = urllib.request.Request(f"{config.base_url}/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["choices"][0]["text"]
        assert answer.strip() == "Rome"
        assert "Uvicorn running" in llm_server.log_file(tmp_path).read_text()
    finally:
        stopped = llm_server.stop(tmp_path)
    assert stopped is True
    assert llm_server.probe(config) is llm_server.PortState.FREE
