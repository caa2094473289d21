"""The local endpoint's bounds, over real HTTP against the real router and deployment servers: the key and the
body's length are checked before any of the body is read, oversized bodies get a 413, bad lengths a 400/411,
and what one request adds to the production log is bounded."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project

from stages.deploy import local, router
from stages.deploy.spec import SpecError, load_spec

UC = "web_classification"
KEY = "canary-endpoint-key-limits-93b1"
LIMIT = 65536  # conf/deploy/dev.yaml targets.local.max_request_bytes
LOG_MAX_CHARS = 8192  # conf/deploy/dev.yaml targets.local.log_max_chars


def raw_request(port: int, head: list[str], body: bytes = b"") -> tuple[int, dict[str, str], dict]:
    """Send the request line and headers `head` (and `body`), read the answer until the server closes the
    connection; returns (status, headers, JSON body). A server that waited for a body it was not sent would not
    answer (nor close): the socket's timeout fails the call."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(("\r\n".join([*head, "Host: 127.0.0.1", "", ""])).encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    lines = header.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(payload)


def test_the_endpoint_checks_key_and_length_before_reading_and_bounds_its_log(project: Project) -> None:
    project.env["LLMOPS_ENDPOINT_KEY"] = KEY
    project.sh("llmops", "deploy", "--use-case", UC)
    pids = local.runtime(project.root, "dev", UC) / "pids"
    ports = {name: json.loads((pids / f"{name}.json").read_text())["port"] for name in ("router", "green")}
    auth, json_type = f"Authorization: Bearer {KEY}", "Content-Type: application/json"
    try:
        for name, port in ports.items():  # the router (the endpoint) and a deployment server behind it
            # Headers announcing a huge body, none sent: answered at once, and the connection closed.
            status, headers, body = raw_request(port, ["POST /score HTTP/1.1", auth, "Content-Length: 1000000000000"])
            assert (status, headers["connection"]) == (413, "close"), name
            assert body["error"] == (
                f"request body of 1000000000000 bytes is over the limit of {LIMIT} bytes "
                "(targets.local.max_request_bytes)"
            )
            # No key: a 401 before any of the body is read.
            status, _, body = raw_request(port, ["POST /score HTTP/1.1", "Content-Length: 1000000000000"])
            assert status == 401 and body["error"] == "missing or wrong API key (Authorization: Bearer <key>)"
            status, _, body = raw_request(port, ["POST /score HTTP/1.1", auth, "Content-Length: 12abc"])
            assert status == 400
            assert body["error"] == "malformed Content-Length header: '12abc' (expected one whole number of bytes)"
            status, _, body = raw_request(port, ["POST /score HTTP/1.1", auth, "Content-Length: -1"])
            assert status == 400 and "malformed Content-Length header: '-1'" in body["error"]
            status, _, body = raw_request(
                port, ["POST /score HTTP/1.1", auth, "Content-Length: 2", "Content-Length: 3"]
            )
            assert status == 400 and "'2', '3'" in body["error"]
            status, _, body = raw_request(port, ["POST /score HTTP/1.1", auth, "Connection: close"])
            assert status == 411 and body["error"] == "a POST needs a Content-Length header"
            status, _, body = raw_request(port, ["POST /score HTTP/1.1", auth, "Transfer-Encoding: chunked"])
            assert status == 411 and "chunked transfer encoding is not accepted" in body["error"]
            # A client that asks first (Expect: 100-continue, as curl does for large bodies) gets the 413 instead.
            status, _, body = raw_request(
                port, ["POST /score HTTP/1.1", auth, f"Content-Length: {LIMIT + 1}", "Expect: 100-continue"]
            )
            assert status == 413 and f"request body of {LIMIT + 1} bytes" in body["error"]
            # A client that sends its oversized body anyway still reads the 413 (the server drops what it sends).
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            request = urllib.request.Request(f"http://127.0.0.1:{port}/score", b"x" * (LIMIT + 1), headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=20)
            assert refused.value.code == 413
            # A body within the limit is served, also one with a long input: the log keeps a bounded part of it.
            inputs = json.dumps({"url": "https://example.com/long", "text": "word " * 4000}).encode()
            assert len(inputs) <= LIMIT
            status, _, body = raw_request(
                port, ["POST /score HTTP/1.1", auth, json_type, f"Content-Length: {len(inputs)}", "Connection: close"],
                inputs,
            )  # fmt: skip
            assert status == 200 and "category" in body
        # The router's other routes check the key before the body too.
        status, _, _ = raw_request(ports["router"], ["PUT /-/weights HTTP/1.1", "Content-Length: 1000000000000"])
        assert status == 401
        status, _, body = raw_request(ports["router"], ["PUT /-/weights HTTP/1.1", auth, "Content-Length: 99999999"])
        assert status == 413
    finally:
        project.sh("llmops", "undeploy", "--use-case", UC)

    logs = local.runtime(project.root, "dev", UC) / "logs"
    for log in sorted(logs.glob("*.log")):
        assert "Traceback" not in log.read_text(), f"{log.name}:\n{log.read_text()[-3000:]}"
    logged = [json.loads(line) for line in local.production_log(project.root, "dev", UC).read_text().splitlines()]
    assert [row["status"] for row in logged] == [413, 401, 400, 400, 400, 411, 411, 413, 413, 200]
    assert all(row["inputs"] is None for row in logged[:-1]) and logged[0]["error"].startswith("request body of")
    text = logged[-1]["inputs"]["text"]
    assert (
        text
        == "word " * (LOG_MAX_CHARS // 5) + "word "[: LOG_MAX_CHARS % 5] + f"... [{20000 - LOG_MAX_CHARS} chars cut]"
    )
    assert max(len(line) for line in local.production_log(project.root, "dev", UC).read_text().splitlines()) < 10_000


def test_logged_values_are_cut_to_the_bound() -> None:
    assert router.bounded({"a": "x" * 12, "b": ["y" * 3, 7, None], "z" * 12: True}, 10) == {
        "a": "xxxxxxxxxx... [2 chars cut]", "b": ["yyy", 7, None], "zzzzzzzzzz... [2 chars cut]": True,
    }  # fmt: skip


@pytest.mark.parametrize("value", [0, -5, "64k", 1.5, True])
def test_a_bad_bound_names_the_file_and_key(tmp_path: Path, value: object) -> None:
    conf = yaml.safe_load((REPO / "conf" / "deploy" / "dev.yaml").read_text())
    conf["targets"]["local"]["max_request_bytes"] = value
    (tmp_path / "conf" / "deploy").mkdir(parents=True)
    (tmp_path / "conf" / "deploy" / "dev.yaml").write_text(yaml.safe_dump(conf))
    spec = load_spec(tmp_path, UC, "dev", "local", yaml.safe_load((REPO / "params.yaml").read_text()))
    with pytest.raises(
        SpecError, match=r"conf/deploy/dev.yaml: targets.local.max_request_bytes must be a whole number"
    ):
        local.limit(spec, "max_request_bytes")
