"""`llmops`: the project commands that are not pipeline stages."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stages.cli import deploy as deploy_commands
from stages.cli import results, usecases
from stages.cli.compose import compose_params
from stages.cli.compose import env_params as env_params  # used by tests and scripts as cli.env_params
from stages.core import conf_schema, redaction, remote
from stages.core.project import load_params, project_root, runtime_dir
from stages.data import datasets
from stages.deploy import local, production
from stages.deploy.spec import SpecError
from stages.llm import connections, llm_server
from stages.metrics import headline
from stages.usecases import catalogue, importer, scaffold


def _server_settings(root: Path) -> llm_server.ServerSettings:
    return llm_server.ServerSettings.from_params(load_params(root)["server"])


def cmd_params(args: argparse.Namespace) -> int:
    root = project_root()
    output = args.output or root / "params.yaml"
    from hydra.errors import HydraException

    try:
        compose_params(root, args.overrides, output)
    except HydraException as exc:  # an override Hydra cannot apply, a group option that does not exist
        print(f"llmops params: {exc}", file=sys.stderr)
        return 1
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


def parser() -> argparse.ArgumentParser:
    """The `llmops` command line: one subcommand per task, each with its handler (an argument table)."""
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
    add.add_argument(
        "--prediction",
        help="run output shown as the prediction (default: the first outputs.* mapped, else the flow's first output)",
    )
    add.add_argument("--correct", default="correct", help="evaluation output with per-row correctness")
    add.add_argument(
        "--llm-node",
        help="the DAG flow's LLM node the variants' prompt and params go to (default: "
        "the first without node variants); every LLM node runs on the project's LLM",
    )
    add.add_argument("--force", action="store_true", help="replace an existing conf/use_cases/<name>.yaml")
    add.set_defaults(handler=usecases.cmd_add_use_case)

    new = commands.add_parser("new", help="scaffold a runnable use case (flow, eval flow, sample data, config)")
    new.add_argument("name", help="the use case's name (lower-case Python name)")
    new.add_argument("--kind", required=True, choices=sorted(scaffold.KINDS), help="the standard flow's type")
    new.set_defaults(handler=usecases.cmd_new)

    par = commands.add_parser("parity", help="a use case against its `parity.against` (e.g. MAF vs prompt flow)")
    par.add_argument("use_case", help="the candidate use case (its conf has parity: {against: ...})")
    par.add_argument("--rev", default="workspace", help="git revision or experiment (default: the workspace)")
    par.add_argument("--out", type=Path, default=Path("reports/parity"), help="folder for <use case>.md/.json")
    par.set_defaults(handler=results.cmd_parity)

    mig = commands.add_parser("migrate", help="a use case's prompt flow flow as a MAF workflow (+ use case <name>_maf)")
    mig.add_argument("use_case", help="the use case whose standard flow (DAG or prompty) to migrate")
    mig.add_argument(
        "--eval",
        action="store_true",
        help="also its DAG evaluation flow (<eval flow>_maf); the new use case evaluates with it",
    )
    mig.set_defaults(handler=usecases.cmd_migrate)

    imp = commands.add_parser("import-experiment", help="import a use case of the LLMOps-with-Prompt-flow template")
    imp.add_argument("path", type=Path, help="the folder holding experiment.yaml (+ experiment.<env>.yaml, flows/)")
    imp.add_argument("--name", help="the use case's name (default: experiment.yaml's name)")
    imp.add_argument(
        "--file",
        default="experiment.yaml",
        help="the experiment file in the folder (overlays: <stem>.<env>.yaml beside it)",
    )
    imp.add_argument(
        "--llm-node",
        help="the standard flow's LLM node the variants' prompt and params go to "
        "(default: the first without node variants); every LLM node runs on the project's LLM",
    )
    imp.set_defaults(handler=usecases.cmd_import_experiment)

    rem = commands.add_parser("remote", help="check the DVC remote (Azure Blob) has credentials before push/pull")
    rem.add_argument("action", choices=["check"])
    rem.add_argument("name", nargs="?", help="the remote (default: DVC's default remote)")
    rem.set_defaults(handler=cmd_remote)

    cmp = commands.add_parser("compare", help="experiments or commits side by side, with significance verdicts")
    cmp.add_argument("refs", nargs="+", metavar="REF", help="git revisions or `dvc exp` names; `workspace` = on disk")
    cmp.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    cmp.add_argument("--out", type=Path, default=Path("reports/compare"), help="folder for <use case>.html/.csv")
    cmp.set_defaults(handler=results.cmd_compare)

    dep = commands.add_parser("deploy", help="deploy a use case's variants (conf/deploy/<env>.yaml) to a target")
    dep.add_argument("--use-case", required=True)
    dep.add_argument("--target", default="local", help="local (default), azureml, kubernetes or webapp")
    dep.add_argument("--env", default="dev", help="conf/deploy/<env>.yaml (default: dev)")
    dep.set_defaults(handler=deploy_commands.cmd_deploy)

    und = commands.add_parser("undeploy", help="stop a use case's local deployments and router")
    und.add_argument("--use-case", required=True)
    und.add_argument("--env", default="dev")
    und.set_defaults(handler=deploy_commands.cmd_undeploy)

    smk = commands.add_parser("smoke", help="call the endpoint with sample-request.json; non-zero exit on failure")
    smk.add_argument("--use-case", required=True)
    smk.add_argument("--env", default="dev")
    smk.add_argument("--target", help="default: the last target deployed")
    smk.add_argument("--url", help="the scoring URL (default: the one recorded by `llmops deploy`)")
    smk.add_argument("--key-env", help="environment variable with the endpoint key (default: from conf/deploy)")
    smk.add_argument("--requests", type=int, default=1, help="how many times to send the sample request")
    smk.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    smk.set_defaults(handler=deploy_commands.cmd_smoke)

    rbk = commands.add_parser("rollback", help="restore the previous traffic split (live)")
    rbk.add_argument("--use-case", required=True)
    rbk.add_argument("--env", default="dev")
    rbk.add_argument("--target", help="default: the last target deployed")
    rbk.set_defaults(handler=deploy_commands.cmd_rollback)

    evp = commands.add_parser("evaluate-production", help="evaluate each deployment on the production log, compared")
    evp.add_argument("--use-case", required=True)
    evp.add_argument("--env", default="dev")
    evp.add_argument("--log", type=Path, help="production log (default: the local router's, under .llmops/deploy/)")
    evp.add_argument("--sample", type=int, default=200, help="distinct requests evaluated per deployment (seeded)")
    evp.add_argument("--seed", type=int, default=0)
    evp.add_argument("--out", type=Path, default=Path("reports/production"), help="folder for <uc>.<env>.html/.json")
    evp.set_defaults(handler=deploy_commands.cmd_evaluate_production)
    mon = commands.add_parser("monitor", help="offline HTML dashboard of an endpoint over time (A/B, shadow)")
    mon.add_argument("--use-case", required=True)
    mon.add_argument("--env", default="dev")
    mon.add_argument("--log", type=Path, help="production log (default: the local router's, under .llmops/deploy/)")
    mon.add_argument("--evaluation", type=Path, help="evaluate-production JSON (default: reports/production/)")
    mon.add_argument("--out", type=Path, default=Path("reports/monitor"), help="folder for <uc>.<env>.html")
    mon.set_defaults(handler=deploy_commands.cmd_monitor)
    gat = commands.add_parser(
        "gate", help="quality gate: thresholds (conf/env) and the baseline revision; exit 1 on fail"
    )
    gat.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    gat.add_argument("--env", help="thresholds of conf/env/<env>.yaml (default: params.yaml's env)")
    gat.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    gat.add_argument("--md", type=Path, help="also write the table as markdown to this file")
    gat.set_defaults(handler=results.cmd_gate)

    prc = commands.add_parser("pr-comment", help="compose the PR comment (gate, verdicts, flips, metrics diff)")
    prc.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    prc.add_argument("--env", help="thresholds of conf/env/<env>.yaml (default: params.yaml's env)")
    prc.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    prc.add_argument("--out", type=Path, default=Path("reports/pr-comment.md"), help="where to write the markdown")
    prc.add_argument("--max-flips", type=int, default=10, help="flipped rows shown per use case")
    prc.add_argument("--post", action="store_true", help="create or edit the comment on the PR with `gh`")
    prc.add_argument("--pr", type=int, default=int(os.environ.get("PR_NUMBER") or 0) or None, help="PR number")
    prc.set_defaults(handler=results.cmd_pr_comment)

    pln = commands.add_parser("plan", help="rows needed to detect a drop, and the drop today's rows detect")
    pln.add_argument("--use-case", required=True)
    pln.add_argument("--detect", type=float, default=0.05, help="the drop to detect (default 0.05: 5 points)")
    pln.add_argument("--alpha", type=float, default=0.05, help="the test's two-sided alpha (default 0.05)")
    pln.set_defaults(handler=results.cmd_plan)

    siz = commands.add_parser("size-subsets", help="Hydra overrides sizing the subsets of the use cases a PR changed")
    siz.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    siz.add_argument("--env", default="pr", help="conf/env/<env>.yaml: subset.rows and gate.sizing (default: pr)")
    siz.set_defaults(handler=results.cmd_size_subsets)

    summary = commands.add_parser("summary", help="headline metrics and report paths of every use case")
    summary.set_defaults(handler=results.cmd_summary)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    redaction.install()  # the keys a command reads (the endpoint's, the LLM's) never reach its output
    try:
        return args.handler(args)
    except (
        llm_server.ServerError,
        catalogue.CatalogueError,
        importer.ExperimentImportError,
        remote.RemoteError,
        SpecError,
        local.DeployError,
        connections.ConnectionConfigError,
        production.ProductionLogError,
        datasets.DatasetError,
        headline.MetricSpecError,
        conf_schema.ConfError,
    ) as exc:
        print(f"llmops: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
