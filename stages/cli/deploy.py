"""`llmops` commands on deployments: deploy, undeploy, smoke, rollback, evaluate-production."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages import deploy
from stages.core.project import load_params, project_root, runtime_dir
from stages.deploy import local, production
from stages.deploy.spec import SpecError
from stages.llm import connections
from stages.results.formatting import headline_text


def cmd_deploy(args: argparse.Namespace) -> int:
    root = project_root()
    print(f"deploy {args.use_case} to {args.target} (env {args.env}):")
    record = deploy.deploy(root, args.use_case, args.env, args.target)
    split = ", ".join(f"{name} {weight}%" for name, weight in record.get("weights", {}).items())
    print(f"deployed {args.use_case}: {record.get('url') or record.get('scoring_uri') or args.target}  split: {split}")
    if record.get("log"):
        print(f"  production log: {record['log']}")
    print(f"  what was deployed: {deploy.state.path(root, args.env, args.use_case).relative_to(root)}")
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    stopped = local.stop(project_root(), args.env, args.use_case)
    print(f"stopped {', '.join(stopped)}" if stopped else f"nothing of {args.use_case} was running in env {args.env}")
    return 0


def _sample_request(root: Path, use_case: str) -> object:
    import json

    path = root / "use_cases" / use_case / "sample-request.json"
    if not path.is_file():  # a use case sharing another's folder (e.g. <uc>_maf, `llmops migrate`): its folder's
        flow = load_params(root)["use_cases"].get(use_case, {}).get("flow", "")
        parts = Path(flow).parts
        if len(parts) > 2 and parts[0] == "use_cases":
            path = root / "use_cases" / parts[1] / "sample-request.json"
    if not path.is_file():
        raise SpecError(f"{path.relative_to(root)}: missing (the request `llmops smoke` sends)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SpecError(f"{path.relative_to(root)}: not JSON: {exc}") from None


def cmd_smoke(args: argparse.Namespace) -> int:
    """Call the endpoint with the sample request: status 200, the flow's declared outputs, the deployment header."""
    from stages import engine
    from stages.core import variants
    from stages.deploy import smoke

    root = project_root()
    target, entry = deploy.current(root, args.use_case, args.env, args.target)
    spec = deploy.spec_for(root, args.use_case, args.env, target)
    record = entry["record"]
    url = args.url or record.get("url") or record.get("scoring_uri")
    if not url:
        raise SpecError(f"no endpoint URL recorded for {args.use_case} on {target}; pass --url")
    key_env = args.key_env or spec.options.get("api_key_env")
    key = connections.environment(root).get(str(key_env), "") if key_env else ""
    if not key:
        raise SpecError(f"the endpoint key: environment variable {key_env or '(none: pass --key-env)'} is not set")
    prompt = variants.config(args.use_case, load_params(root)["use_cases"][args.use_case],
                             spec.deployments[0].variant).get("prompt")  # fmt: skip
    prompt = next(iter(prompt.values())) if isinstance(prompt, dict) else prompt
    outputs = engine.interface(spec.flow, prompt).outputs
    payload = _sample_request(root, args.use_case)
    failed = 0
    for _ in range(args.requests):
        status, headers, body, latency = smoke.call(url, key, payload, args.timeout)
        found = smoke.problems(status, headers, body, outputs, [d.name for d in spec.deployments])
        served = headers.get(smoke.DEPLOYMENT_HEADER, "?")
        if found:
            failed += 1
            print(f"smoke {args.use_case}: FAILED at {url} (deployment {served}):", file=sys.stderr)
            for problem in found:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"smoke {args.use_case}: ok, {served} answered in {latency:.2f} s: {sorted(body)}")
    return 1 if failed else 0


def cmd_rollback(args: argparse.Namespace) -> int:
    target, weights = deploy.rollback(project_root(), args.use_case, args.env, args.target)
    split = ", ".join(f"{name} {weight}%" for name, weight in weights.items())
    print(f"rolled back {args.use_case} on {target} (env {args.env}) to the previous split: {split}")
    return 0


def cmd_evaluate_production(args: argparse.Namespace) -> int:
    """Evaluate each deployment on the sampled production log and compare them; writes an HTML report + JSON."""
    from stages import engine
    from stages.core.io import write_json, write_text

    root = project_root()
    params = load_params(root)
    spec = deploy.spec_for(root, args.use_case, args.env, "local")
    order = [d.name for d in spec.deployments]
    try:  # the endpoint key: the join key of redacted inputs (pii.join_key)
        secret = local.endpoint_key(spec, root)
    except SpecError:
        secret = None
    log = args.log or local.production_log(root, args.env, args.use_case)
    engine.configure(runtime_dir(root))
    result = production.evaluate(root, params, args.use_case, order, log, args.sample, args.seed, secret)
    out = args.out.resolve()
    facts = {"env": args.env, "log": str(log), "baseline": result.baseline, "sample": f"{args.sample} per deployment"}
    page = production.render(f"{args.use_case}: production evaluation", facts, result, params["report"]["chart_dpi"])
    write_text(out / f"{args.use_case}.{args.env}.html", page)
    write_json(out / f"{args.use_case}.{args.env}.json", result.as_dict())
    summary = result.as_dict()
    for name, traffic in summary["deployments"].items():
        print(f"{name} ({traffic['variant']}): {traffic['rows']} requests, {traffic['errors']} errors, "
              f"latency p50 {traffic['latency_s']['p50']:.3f} s, {traffic['joined']} of {traffic['sampled']} sampled "
              "joined to the dataset")  # fmt: skip
        for part in ("evaluated", "reference_free"):
            if name in summary[part]:
                print(f"  {part.replace('_', '-')}: {headline_text(summary[part][name], result.baseline)}")
    for part, by_name in summary["shadow"].items():
        for name, metrics in by_name.items():
            if name != production.LIVE:
                verdict = headline_text(metrics, production.LIVE)
                print(f"shadow {name} vs live ({part.replace('_', '-')}, same requests): {verdict}")
    print(f"report: {out / f'{args.use_case}.{args.env}.html'}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """The endpoint's dashboard over time (production log, deployment traces, last production evaluation)."""
    from stages.core.io import read_json, write_text
    from stages.deploy import monitor
    from stages.metrics import cost
    from stages.observability import otlp_json

    root = project_root()
    params = load_params(root)
    log = args.log or local.production_log(root, args.env, args.use_case)
    try:
        records = production.read_log(log)
    except production.ProductionLogError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 1
    spans = [span for path in sorted((local.runtime(root, args.env, args.use_case) / "traces").glob("*.jsonl"))
             for span in otlp_json.read(path)]  # fmt: skip
    evaluation_file = args.evaluation or root / "reports" / "production" / f"{args.use_case}.{args.env}.json"
    evaluation = read_json(evaluation_file) if evaluation_file.is_file() else None
    price = cost.price_for(params["prices"], str(params["llm"]["model"]))
    traces = len({span.trace_id for span in spans})
    facts = {"env": args.env, "log": str(log), "requests": str(len(records)), "traces": str(traces),
             "LLM": f"{params['llm']['name']} ({params['llm']['model']})"}  # fmt: skip
    page = monitor.render(f"{args.use_case}: monitoring ({args.env})", facts, records, price, evaluation,
                          monitor.slowest_traces(spans), params["report"]["chart_dpi"])  # fmt: skip
    out = args.out.resolve() / f"{args.use_case}.{args.env}.html"
    write_text(out, page)
    print(f"dashboard: {out} ({len(records)} requests, {traces} traces)")
    return 0
