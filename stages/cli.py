"""`llmops`: the project commands that are not pipeline stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core import catalogue, importer, llm_server, remote, reporting
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


def cmd_remote(args: argparse.Namespace) -> int:
    """Which remote `make push`/`make pull` use and where its credentials come from (never the secret)."""
    found = remote.check(project_root(), args.name)
    print(f"DVC remote {found.name}: {found.url} (credentials: {found.credentials})")
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
        headline = reporting.headline_text(metrics.get("headline") or {}, metrics.get("baseline"))
        variant = metrics.get("variant", "?")
        errors = run.get("errors", 0) + metrics.get("eval_errors", 0)
        rows = (
            f"{run.get('rows', '?')} x {metrics['repeats']} repeats"
            if metrics.get("repeats")
            else metrics.get("rows", "?")
        )
        counts = f"rows {rows}  errors {errors}  invalid {run.get('invalid_answers', 0)}"
        if "cost" in run or "cost" in metrics:
            counts += f"  cost {reporting.format_usd(reporting.total_cost(run, metrics))}"
        print(f"{use_case_dir.name} ({variant}): {headline}  {counts}")
        print(f"  report:  {use_case_dir / 'report' / 'report.html'}")
        print(f"  metrics: {metrics_file.relative_to(root)}, {run_file.relative_to(root)}")
        found = True
    if not found:
        print("no results yet: run `make run` (or `dvc repro`)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Experiments or commits side by side per use case, each compared with the first, with verdicts."""
    from stages.core import compare

    root = project_root()
    params = load_params(root)
    use_cases = args.use_case or list(params["use_cases"])
    try:
        refs = [(name, compare.resolve(root, name)) for name in args.refs]
    except compare.CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for use_case in use_cases:
        config = params["use_cases"].get(use_case)
        if config is None:
            print(f"compare: no use case {use_case} in params.yaml", file=sys.stderr)
            return 1
        try:
            page, parts = compare.compare_use_case(
                root, use_case, config, refs, args.out.resolve(), params["report"]["chart_dpi"]
            )
        except compare.CompareError as exc:
            print(f"compare {use_case}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{use_case}:")
        for part in parts:
            print(f"  {part.name}: {reporting.headline_text(part.headline, parts[0].name)}")
        print(f"  page: {page}")
    return 1 if failed == len(use_cases) else 0


def cmd_add_use_case(args: argparse.Namespace) -> int:
    root = project_root()
    mapping = dict(item.split("=", 1) for item in args.map)
    outputs = [source.split(".", 1)[1] for source in mapping.values() if source.startswith("outputs.")]
    spec = catalogue.UseCaseSpec(
        name=args.name,
        dataset=args.dataset,
        flow=args.flow,
        eval_flow=args.eval_flow,
        inputs=tuple(args.inputs.split(",")),
        label=args.label,
        mapping=mapping,
        prediction=args.prediction or (outputs[0] if outputs else "output"),
        correct=args.correct,
        llm_node=args.llm_node,
    )
    config = catalogue.add(root, spec, overwrite=args.force)
    compose_params(root, [], root / "params.yaml")
    print(
        f"added use case {args.name}: {config.relative_to(root)}, registered in conf/config.yaml, params.yaml composed"
    )
    print("next: `dvc repro` (stages run@" + args.name + " etc. come from dvc.yaml's foreach)")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    root = project_root()
    config = catalogue.scaffold(root, args.name, args.kind)
    compose_params(root, [], root / "params.yaml")
    print(f"scaffolded use case {args.name} ({args.kind}): use_cases/{args.name}/, {config.relative_to(root)}")
    print("next: `dvc repro`, then replace the sample flow, data and evaluation with your own")
    return 0


def cmd_import_experiment(args: argparse.Namespace) -> int:
    root = project_root()
    result = importer.import_experiment(root, args.path.resolve(), args.name)
    compose_params(root, [], root / "params.yaml")
    print(f"imported {args.path} as use case {result.name}: {result.config.relative_to(root)}")
    for item in result.copied:
        print(f"  copied  {item}")
    for item in result.not_mapped:
        print(f"  NOT MAPPED  {item}")
    print("next: `dvc repro`")
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

    add = commands.add_parser("add-use-case", help="make a flow folder + dataset a use case (config only)")
    add.add_argument("name", help="the use case's name (lower-case Python name)")
    add.add_argument("--flow", required=True, help="standard flow folder (DAG or prompty), relative to the root")
    add.add_argument("--eval-flow", required=True, help="evaluation flow folder")
    add.add_argument("--dataset", required=True, help="JSON Lines dataset (DVC-tracked)")
    add.add_argument("--inputs", required=True, help="comma-separated dataset columns the flow takes")
    add.add_argument("--label", required=True, help="the ground-truth column")
    add.add_argument("--map", action="append", default=[], metavar="INPUT=SOURCE",
                     help="evaluation flow input <- data.<column> or outputs.<name> (repeat)")  # fmt: skip
    add.add_argument("--prediction", help="run output shown as the prediction (default: first outputs.* mapped)")
    add.add_argument("--correct", default="correct", help="evaluation output with per-row correctness")
    add.add_argument("--llm-node", help="the DAG flow's LLM node (found automatically when there is one)")
    add.add_argument("--force", action="store_true", help="replace an existing conf/use_cases/<name>.yaml")
    add.set_defaults(handler=cmd_add_use_case)

    new = commands.add_parser("new", help="scaffold a runnable use case (flow, eval flow, sample data, config)")
    new.add_argument("name", help="the use case's name (lower-case Python name)")
    new.add_argument("--kind", required=True, choices=sorted(catalogue.KINDS), help="the standard flow's type")
    new.set_defaults(handler=cmd_new)

    imp = commands.add_parser("import-experiment", help="import a use case of the LLMOps-with-Prompt-flow template")
    imp.add_argument("path", type=Path, help="the folder holding experiment.yaml (+ experiment.<env>.yaml, flows/)")
    imp.add_argument("--name", help="the use case's name (default: experiment.yaml's name)")
    imp.set_defaults(handler=cmd_import_experiment)

    rem = commands.add_parser("remote", help="check the DVC remote (Azure Blob) has credentials before push/pull")
    rem.add_argument("action", choices=["check"])
    rem.add_argument("name", nargs="?", help="the remote (default: DVC's default remote)")
    rem.set_defaults(handler=cmd_remote)

    cmp = commands.add_parser("compare", help="experiments or commits side by side, with significance verdicts")
    cmp.add_argument("refs", nargs="+", metavar="REF", help="git revisions or `dvc exp` names; `workspace` = on disk")
    cmp.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    cmp.add_argument("--out", type=Path, default=Path("reports/compare"), help="folder for <use case>.html/.csv")
    cmp.set_defaults(handler=cmd_compare)

    summary = commands.add_parser("summary", help="headline metrics and report paths of every use case")
    summary.set_defaults(handler=cmd_summary)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (
        llm_server.ServerError,
        catalogue.CatalogueError,
        importer.ExperimentImportError,
        remote.RemoteError,
    ) as exc:
        print(f"llmops: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
