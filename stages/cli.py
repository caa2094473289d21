"""`llmops`: the project commands that are not pipeline stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core import llm_server, reporting
from stages.core.project import load_params, project_root, runtime_dir


def compose_params(root: Path, overrides: list[str], output: Path) -> None:
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra integration)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(root / "conf"), None, "config", str(root / "conf" / "hydra_plugins"), overrides)


def _server_settings(root: Path) -> llm_server.ServerSettings:
    return llm_server.ServerSettings.from_params(load_params(root)["server"])


def cmd_params(args: argparse.Namespace) -> int:
    root = project_root()
    output = args.output or root / "params.yaml"
    compose_params(root, args.overrides, output)
    print(f"composed conf/ -> {output}")
    return 0


def cmd_llm(args: argparse.Namespace) -> int:
    root = project_root()
    runtime = runtime_dir(root)
    if args.action == "stop":
        print("stopped the embedded LLM" if llm_server.stop(runtime) else "the embedded LLM was not running")
        return 0
    settings = _server_settings(root)
    if args.action == "status":
        state = llm_server.probe(settings)
        print(f"{settings.base_url}: {state.value}")
        return 0 if state is llm_server.PortState.OURS else 1
    if args.action == "model":
        print(llm_server.model_path(runtime))
        return 0
    outcome = llm_server.start(settings, runtime)
    print(f"embedded LLM {outcome} at {settings.base_url} (log: {llm_server.log_file(runtime)})")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Headline numbers and report paths of every use case that has been run."""
    import json

    root = project_root()
    found = False
    for metrics_file in sorted(root.glob("data/*/eval/metrics.json")):
        use_case_dir = metrics_file.parents[1]
        metrics = json.loads(metrics_file.read_text())
        run_file = use_case_dir / "run" / "summary.json"
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        headline = "  ".join(f"{key} {value:.1%}" for key, value in reporting.rates(metrics).items())
        errors = run.get("errors", 0) + metrics.get("eval_errors", 0)
        counts = f"rows {metrics.get('rows', '?')}  errors {errors}  invalid {run.get('invalid_answers', 0)}"
        print(f"{use_case_dir.name}: {headline}  {counts}")
        print(f"  report:  {use_case_dir / 'report' / 'report.html'}")
        print(f"  metrics: {metrics_file.relative_to(root)}, {run_file.relative_to(root)}")
        found = True
    if not found:
        print("no results yet: run `make run` (or `dvc repro`)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    params = commands.add_parser("params", help="compose conf/ into params.yaml (as `dvc exp run` does)")
    params.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. variant=v2 env=pr")
    params.add_argument("-o", "--output", type=Path, help="where to write (default: params.yaml)")
    params.set_defaults(handler=cmd_params)

    llm = commands.add_parser("llm", help="the embedded LLM server")
    llm.add_argument("action", choices=["start", "stop", "status", "model"])
    llm.set_defaults(handler=cmd_llm)

    summary = commands.add_parser("summary", help="headline metrics and report paths of every use case")
    summary.set_defaults(handler=cmd_summary)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except llm_server.ServerError as exc:
        print(f"llmops: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
