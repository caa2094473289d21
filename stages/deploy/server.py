"""One local deployment: a use case's flow, with one variant, served over HTTP on 127.0.0.1.

`POST /score` takes the flow's inputs as a JSON object and answers its outputs (header `azureml-model-deployment`
names the deployment); `GET /health` says which deployment, variant and config fingerprint this is. Both need
`Authorization: Bearer <key>`, checked before the body is read; a body above `--max-body-bytes` is refused (413).
The flow runs in this process through `engine.FlowSession`, with the LLM connection of params.yaml built in
memory (a MAF workflow through an LLM proxy without cache, whose bridge serves its clients' APIs on any
connection). Started by `llmops deploy` (stages/deploy/local.py), never by hand.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages import engine
from stages.core import variants
from stages.core.io import read_json
from stages.core.project import load_params, project_root, runtime_dir
from stages.data import datasets
from stages.deploy import endpoint, web
from stages.engine.maf import is_maf_flow
from stages.llm import connections, llm_proxy
from stages.observability import tracing


def build(
    root: Path, params: Mapping[str, Any], use_case: str, variant: str, proxy: llm_proxy.LLMProxy | None = None
) -> tuple[engine.FlowSession, engine.FlowInterface, set[str]]:
    """The use case's flow bound to `variant` and to the LLM connection of params.yaml (secrets from the env),
    through `proxy` when given (a running `endpoint.serving_proxy`), what it declares, and the inputs a request
    must give (the dataset's inputs and those without a default)."""
    config = params["use_cases"][use_case]
    block = variants.config(use_case, config, variant)
    connection = connections.resolve(params["llm"], connections.environment(root))
    if proxy is not None:  # the endpoint's proxy (fallbacks, LLM spans; the chat bridge for a MAF flow)
        connection = proxy.connection(connection)
    elif is_maf_flow(root / config["flow"]):  # MAF's clients speak chat / Responses: the proxy's bridge (no cache)
        cache = runtime_dir(root) / "serve" / use_case / "no-cache"
        proxy = llm_proxy.from_params(connection, params["llm"], {"enabled": False}, cache,
                                      row_of=engine.row_of_request, bridge_chat=True).__enter__()  # fmt: skip
        connection = proxy.connection(connection)
    binding = engine.binding_for(connection, block)
    declared = engine.interface(root / config["flow"], binding.prompt)
    required = {name for name, (_, needed) in declared.inputs.items() if needed}
    required |= set(datasets.input_columns(config["data"]["inputs"]))
    session = engine.FlowSession(
        root / config["flow"], binding, node_inputs=block.get("node_inputs"),
        node_variants=variants.deployed_node_variants(use_case, config, variant),
        row_timeout_s=params["bulk"]["row_timeout_s"],
    )  # fmt: skip
    session.llm_proxy = proxy  # type: ignore[attr-defined]  # serves as long as the session (the process)
    return session, declared, required


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--fingerprint", required=True, help="the config hash `llmops deploy` compares on redeploy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body-bytes", type=int, required=True, help="larger request bodies get a 413")
    parser.add_argument("--ready-file", type=Path, required=True, help="{pid, started, port}, once listening")
    parser.add_argument("--observability", type=Path, help="JSON: the deployment's observability block")
    parser.add_argument("--traces", type=Path, help="OTLP JSON trace file of this deployment's requests")
    return parser.parse_args(argv)


def _handler(args: argparse.Namespace, key: str, scoring: endpoint.Endpoint) -> type[web.JSONHandler]:
    identity = {"deployment": args.deployment, "variant": args.variant, "fingerprint": args.fingerprint}
    named = {web.DEPLOYMENT_HEADER: args.deployment}

    class Handler(web.JSONHandler):
        api_key = key
        max_body_bytes = args.max_body_bytes

        def do_GET(self) -> None:
            if self.path != "/health":
                self.reply(404, {"error": f"no route {self.path}; POST /score, GET /health"})
            elif self.authorized():
                self.reply(200, {**identity, **scoring.health()}, named)

        def do_POST(self) -> None:
            if self.path != "/score":
                self.reply(404, {"error": f"no route {self.path}; POST /score, GET /health"})
                return
            if not self.authorized():
                return
            try:
                inputs = json.loads(self.body() or b"null")
            except web.BodyError as exc:
                self.reply(exc.status, {"error": str(exc)}, named)
                return
            except ValueError as exc:
                self.reply(400, {"error": f"the request body is not JSON: {exc}"}, named)
                return
            request_id = self.headers.get(endpoint.REQUEST_ID_HEADER) or uuid.uuid4().hex
            status, answer, meta = scoring.score(request_id, inputs)
            self.reply(status, answer, {**named, endpoint.META_HEADER: json.dumps(meta)})

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    key = web.key_from_env()
    root = project_root()
    params = load_params(root)
    engine.configure(runtime_dir(root))
    observed = endpoint.Observability.from_config(read_json(args.observability) if args.observability else None)
    observed.pii.redact_text("Warm up, Jane Doe.")  # loads the PII detector (Presidio: seconds) before listening
    labels = {"llmops.use_case": args.use_case, "llmops.deployment": args.deployment, "llmops.variant": args.variant}
    telemetry = tracing.setup(f"llmops-{args.use_case}-{args.deployment}", args.traces, redactor=observed.pii,
                              attributes=labels, content=observed.trace_content)  # fmt: skip
    # `llmops undeploy` stops the process with SIGTERM: the spans still queued are exported first
    signal.signal(signal.SIGTERM, lambda *_: (telemetry.shutdown(), sys.exit(0)))
    tracing.set_attributes(use_case=args.use_case, deployment=args.deployment, variant=args.variant)
    env = connections.environment(root)
    bridge = is_maf_flow(root / params["use_cases"][args.use_case]["flow"])  # MAF's clients speak chat
    proxy = endpoint.serving_proxy(connections.resolve(params["llm"], env), params["llm"], env, bridge)
    proxy.__enter__()  # serves until the process ends
    session, declared, required = build(root, params, args.use_case, args.variant, proxy)
    scoring = endpoint.Endpoint(session, declared, required, observed, proxy, labels=labels)
    server = web.Server((args.host, args.port), _handler(args, key, scoring))
    web.announce(server, args.ready_file)
    print(f"deployment {args.deployment} ({args.variant}) on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
