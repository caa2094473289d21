"""`llmops`: the project commands that are not pipeline stages."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from stages import deploy
from stages.core import conf_schema, redaction, remote
from stages.core.io import write_text
from stages.core.project import load_params, project_root, runtime_dir
from stages.data import datasets
from stages.deploy import local, production
from stages.deploy.spec import SpecError
from stages.llm import connections, llm_server
from stages.metrics import headline
from stages.results import changes
from stages.results import parity as parity_module
from stages.results.formatting import format_usd, headline_text, total_cost
from stages.results.rows import Columns
from stages.usecases import catalogue, importer


def compose_params(root: Path, overrides: list[str], output: Path) -> None:
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra integration), checked
    against conf/'s schema: on a conf_schema.ConfError `output` is left as it was."""
    import tempfile

    import yaml
    from dvc.utils.hydra import compose_and_dump

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".params.", dir=output.parent) as scratch:
        composed = Path(scratch) / output.name
        compose_and_dump(composed, str(root / "conf"), None, "config", str(root / "conf" / "hydra_plugins"), overrides)
        conf_schema.check_params(yaml.safe_load(composed.read_text(encoding="utf-8")))
        os.replace(composed, output)


def env_params(root: Path, env: str, error: type[Exception]) -> dict[str, Any]:
    """The params conf/ composes for `env` (its `env` block: the env file's subset and gate, read once, through
    Hydra); `error` names an env that does not exist."""
    import tempfile

    import yaml

    if not (root / "conf" / "env" / f"{env}.yaml").is_file():
        raise error(f"conf/env/{env}.yaml: no such env (conf/env/<env>.yaml)")
    with tempfile.TemporaryDirectory(prefix=".env-params.") as scratch:
        compose_params(root, [f"env={env}"], Path(scratch) / "params.yaml")
        return yaml.safe_load((Path(scratch) / "params.yaml").read_text(encoding="utf-8"))


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
        headline = headline_text(metrics.get("headline") or {}, metrics.get("baseline"))
        variant = metrics.get("variant", "?")
        errors = run.get("errors", 0) + metrics.get("eval_errors", 0)
        rows = (
            f"{run.get('rows', '?')} x {metrics['repeats']} repeats"
            if metrics.get("repeats")
            else metrics.get("rows", "?")
        )
        counts = f"rows {rows}  errors {errors}  invalid {run.get('invalid_answers', 0)}"
        if "cost" in run or "cost" in metrics:
            counts += f"  cost {format_usd(total_cost(run, metrics))}"
        print(f"{use_case_dir.name} ({variant}): {headline}  {counts}")
        print(f"  report:  {use_case_dir / 'report' / 'report.html'}")
        print(f"  metrics: {metrics_file.relative_to(root)}, {run_file.relative_to(root)}")
        found = True
    if not found:
        print("no results yet: run `make run` (or `dvc repro`)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Experiments or commits side by side per use case, each compared with the first, with verdicts."""
    from stages.results import compare

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
            print(f"  {part.name}: {headline_text(part.headline, parts[0].name)}")
        print(f"  page: {page}")
    return 1 if failed == len(use_cases) else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Rows needed to detect a drop, and the drop today's rows detect, per headline metric of the last evaluation."""
    import json

    from stages.results import compare, plan

    root = project_root()
    params = load_params(root)
    config = params["use_cases"].get(args.use_case)
    if config is None:
        print(f"plan: no use case {args.use_case} in params.yaml (known: {', '.join(params['use_cases'])})",
              file=sys.stderr)  # fmt: skip
        return 2
    if not 0 < args.detect < 1e6 or not 0 < args.alpha < 1:
        print("plan: --detect must be > 0 and --alpha between 0 and 1", file=sys.stderr)
        return 2
    specs = headline.parse_specs(config.get("metrics"), f"use_cases.{args.use_case}.metrics")
    base = f"data/{args.use_case}/eval"
    try:
        metrics = json.loads(compare.read_at(root, f"{base}/metrics.json", None))
        variant, baseline = metrics["variant"], metrics.get("baseline")
        rows = compare.jsonl(compare.read_at(root, f"{base}/rows/{variant}.jsonl", None))
        other = None
        if baseline and baseline != variant and (root / base / "rows" / f"{baseline}.jsonl").is_file():
            other = compare.jsonl(compare.read_at(root, f"{base}/rows/{baseline}.jsonl", None))
    except (OSError, KeyError, ValueError) as exc:
        print(f"plan: no evaluation of {args.use_case} to plan from ({exc}); run `dvc repro evaluate@{args.use_case}`",
              file=sys.stderr)  # fmt: skip
        return 1
    plans = plan.plan(specs, rows, other, baseline if other else None, args.detect, args.alpha)
    print(plan.render(args.use_case, variant, plans, args.alpha, 0.8))
    return 0


def cmd_size_subsets(args: argparse.Namespace) -> int:
    """Print the Hydra overrides that give each use case the PR changed the rows its max_drop needs."""
    import subprocess

    import yaml

    from stages.results import changes, compare, gate, sizing

    root = project_root()
    where = f"conf/env/{args.env}.yaml: gate"
    try:
        # The params the PR's pipeline will run (`make pipeline` composes conf/ for the env), not the committed
        # params.yaml, which a PR that edits conf/ without `llmops params` leaves behind.
        params = env_params(root, args.env, gate.GateConfigError)
        env = params["env"]
        use_cases = list(params["use_cases"])
        thresholds = gate.parse_thresholds(env.get("gate"), use_cases, where)
        caps = sizing.parse_caps((env.get("gate") or {}).get("sizing"), f"{where}.sizing")
        rev = compare.resolve(root, args.baseline)
        lock = yaml.safe_load(compare.read_at(root, "dvc.lock", rev)) or {}
    except (OSError, gate.ERRORS, yaml.YAMLError, conf_schema.ConfError) as exc:
        print(f"size-subsets: {exc}", file=sys.stderr)
        return 2
    small = (env.get("subset") or {}).get("rows")
    if caps is None or small is None:
        print(f"size-subsets: {args.env}.yaml has no gate.sizing or no subset.rows: nothing to size", file=sys.stderr)
        return 0
    diff = subprocess.run(["git", "diff", "--name-only", str(rev)], cwd=root, capture_output=True, text=True)
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=root, capture_output=True,
                               text=True)  # fmt: skip
    touched = set(diff.stdout.split()) | set(untracked.stdout.split())
    specs_count = sum(len(params["use_cases"][uc].get("metrics") or {}) for uc in use_cases)
    found = []
    for name in use_cases:
        config, limits = params["use_cases"][name], thresholds[name]
        what = changes.pending(lock, name, params, touched)
        needed: list[int | None] = []
        dataset_rows, per_row = small, 1.0
        if what:
            try:
                base = compare.snapshot(root, name, args.baseline, rev, run_rows=True)
                other = None
                if base.metrics.get("baseline") not in (None, base.variant):
                    other_path = f"data/{name}/eval/rows/{base.metrics['baseline']}.jsonl"
                    other = compare.jsonl(compare.read_at(root, other_path, rev))
            except (compare.CompareError, OSError) as exc:
                print(f"size-subsets: {name} keeps {small} rows: {exc}", file=sys.stderr)
                found.append(sizing.Sized(name, tuple(what), small, None, small, "no baseline evaluation"))
                continue
            specs = headline.parse_specs(config.get("metrics"), f"use_cases.{name}.metrics")
            alpha = limits.alpha / max(specs_count, 1)  # Holm's first step, as the gate
            needed = sizing.needs(specs, base.rows, other, limits, alpha)
            dataset_rows = len(datasets_rows(root, config))
            per_row = sizing.requests_per_row(base.run_rows, 2 if other is not None else 1)
        found.append(sizing.size(name, what, small, needed, dataset_rows, per_row, caps))
    for item in found:
        print(f"  {item.use_case}: {item.rows} rows ({item.why})" + (f"; {', '.join(item.changes)}" if item.changes
              else ""), file=sys.stderr)  # fmt: skip
    print(" ".join(sizing.overrides(found)))
    return 0


def datasets_rows(root: Path, config: dict[str, Any]) -> list[str]:
    """The non-blank lines of a use case's dataset (its row count)."""
    path = root / config["dataset"]
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def gate_results(root: Path, baseline: str, env: str | None, only: list[str] | None) -> tuple[str, str, list]:
    """(env, baseline revision, per use case gate.UseCaseResult): the workspace checked against `baseline`."""

    from stages.metrics import headline
    from stages.results import compare, gate

    params = load_params(root)
    if env and env != params["env"]["name"]:  # another env's thresholds: conf/ composed for it
        params = env_params(root, env, gate.GateConfigError)
    env = params["env"]["name"]
    block = params["env"].get("gate")  # the composed params' (`-S env.gate...` overrides included)
    use_cases = list(params["use_cases"])
    thresholds = gate.parse_thresholds(block, use_cases, f"conf/env/{env}.yaml: gate")
    if unknown := sorted(set(only or []) - set(use_cases)):
        raise gate.GateConfigError(f"--use-case {unknown[0]}: not in params.yaml (known: {', '.join(use_cases)})")
    rev = compare.resolve(root, baseline)
    if rev is None:
        raise gate.GateConfigError("--baseline: give a git revision or experiment, not the workspace")
    locks = _locks(root, rev)
    results = []
    for name in only or use_cases:
        config = params["use_cases"][name]
        specs = headline.parse_specs(config.get("metrics"), f"use_cases.{name}.metrics")
        found: dict[str, Any] = {}
        for side, label, at in (("candidate", compare.WORKSPACE, None), ("baseline", baseline, rev)):
            try:
                found[side] = compare.snapshot(root, name, label, at, run_rows=True)
            except compare.CompareError as exc:
                found[side], found[f"{side}_missing"] = None, str(exc)
        what = changes.changes(*locks, name) if locks else None
        result = gate.assess(name, specs, Columns.from_config(config), thresholds[name], **found,
                             changes=what)  # fmt: skip
        if config.get("parity"):  # e.g. a migrated use case: equivalent to its prompt flow original?
            try:
                found_parity = parity_of(root, params, name)
                result.checks.append(gate.parity_check(name, found_parity))
                result.parity = parity_module.markdown(found_parity)
            except (parity_module.ParityError, compare.CompareError) as exc:
                result.checks.append(gate.Check(name, "parity", "none", "", "", gate.FAIL, str(exc)))
        results.append(result)
    return env, rev, gate.adjust(results)


def parity_of(root: Path, params: dict[str, Any], name: str, rev: str | None = None) -> Any:
    """The parity of use case `name` against the one its `parity.against` names, at `rev` (None: workspace)."""
    from stages.metrics import headline
    from stages.results import compare

    config = params["use_cases"][name]
    against, margin, alpha = parity_module.settings(config, name)
    if against not in params["use_cases"]:
        raise parity_module.ParityError(f"use_cases.{name}.parity.against: no use case {against} in params.yaml")
    label = rev or compare.WORKSPACE
    candidate = compare.snapshot(root, name, label, rev, run_rows=True)
    baseline = compare.snapshot(root, against, label, rev, run_rows=True)
    specs = headline.parse_specs(config.get("metrics"), f"use_cases.{name}.metrics")
    return parity_module.parity(specs, (against, name), (baseline.rows, candidate.rows),
                                (baseline.run_rows, candidate.run_rows), config["report"]["prediction"], margin,
                                alpha)  # fmt: skip


def cmd_parity(args: argparse.Namespace) -> int:
    """A use case against the one its `parity.against` names (same rows): agreement, differences, verdict."""
    from stages.results import compare

    root = project_root()
    params = load_params(root)
    try:
        rev = compare.resolve(root, args.rev)
        found = parity_of(root, params, args.use_case, rev)
    except (parity_module.ParityError, compare.CompareError, KeyError) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 1
    text = parity_module.markdown(found)
    print(text)
    if args.out:
        write_text(args.out / f"{args.use_case}.md", text)
        write_text(args.out / f"{args.use_case}.json", json.dumps(found.as_dict(), indent=2) + "\n")
    return 0 if found.verdict != "not equivalent" else 1


def _locks(root: Path, rev: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The baseline's and the workspace's dvc.lock (None when either cannot be read: every use case counts as
    changed)."""
    import yaml

    from stages.results import compare

    try:
        texts = compare.read_at(root, "dvc.lock", rev), (root / "dvc.lock").read_text(encoding="utf-8")
        old, new = (yaml.safe_load(text) or {} for text in texts)
    except (OSError, yaml.YAMLError):
        return None
    return old, new


def cmd_gate(args: argparse.Namespace) -> int:
    """Check the workspace's results against thresholds and the baseline revision; exit 1 on any failure."""
    from stages.core.io import write_text
    from stages.results import gate

    root = project_root()
    try:
        env, rev, results = gate_results(root, args.baseline, args.env, args.use_case)
    except gate.ERRORS as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    print(f"quality gate: env {env}, baseline {args.baseline} ({rev[:10]})")
    print(gate.text_table(results))
    print(gate.summary_line(results))
    if args.md:
        write_text(args.md, gate.markdown_table(results) + "\n")
    return 0 if all(r.passed for r in results) else 1


def cmd_pr_comment(args: argparse.Namespace) -> int:
    """Compose the PR comment; with --post, create or edit it in place on the PR through `gh`."""
    import subprocess

    from stages.core.io import write_text
    from stages.results import gate, pr_comment

    root = project_root()
    try:
        env, rev, results = gate_results(root, args.baseline, args.env, args.use_case)
    except gate.ERRORS as exc:
        print(f"pr-comment: {exc}", file=sys.stderr)
        return 2
    diff = subprocess.run(["dvc", "metrics", "diff", args.baseline, "--md"], cwd=root, capture_output=True, text=True)
    if diff.returncode != 0:
        print(f"pr-comment: dvc metrics diff {args.baseline} failed:\n{diff.stderr}", file=sys.stderr)
        return 1
    body = pr_comment.compose(results, baseline=args.baseline, baseline_rev=rev, env=env,
                              metrics_diff_md=diff.stdout, max_flips=args.max_flips)  # fmt: skip
    write_text(args.out, body)
    print(f"PR comment: {args.out} ({len(body)} characters)")
    if not args.post:
        return 0
    repo, pr = os.environ.get("GITHUB_REPOSITORY"), args.pr
    if not repo or not pr:
        print("pr-comment --post: needs GITHUB_REPOSITORY and --pr (or PR_NUMBER)", file=sys.stderr)
        return 1
    found = subprocess.run(pr_comment.find_command(repo, pr), capture_output=True, text=True, check=True)
    comment_id = pr_comment.existing_id(found.stdout)
    payload = args.out.with_suffix(".json")
    write_text(payload, pr_comment.payload(body))
    subprocess.run(pr_comment.write_command(repo, pr, payload, comment_id), check=True, stdout=subprocess.DEVNULL)
    print(f"PR comment {'edited' if comment_id else 'posted'} on {repo}#{pr}")
    return 0


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
        prediction=args.prediction or (outputs[0] if outputs else ""),  # "": the flow's first output
        correct=args.correct,
        llm_node=args.llm_node,
    )
    config, notes = catalogue.add(root, spec, overwrite=args.force)
    compose_params(root, [], root / "params.yaml")
    print(
        f"added use case {args.name}: {config.relative_to(root)}, registered in conf/config.yaml, params.yaml composed"
    )
    for note in notes:
        print(f"  {note}")
    print("next: `dvc repro` (stages run@" + args.name + " etc. come from dvc.yaml's foreach)")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    root = project_root()
    config = catalogue.scaffold(root, args.name, args.kind)
    compose_params(root, [], root / "params.yaml")
    print(f"scaffolded use case {args.name} ({args.kind}): use_cases/{args.name}/, {config.relative_to(root)}")
    print("next: `dvc repro`, then replace the sample flow, data and evaluation with your own")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """`llmops migrate <use case>`: its prompt flow flow as a MAF workflow folder, and the use case `<name>_maf`."""
    import yaml

    from stages.engine import migrate

    root = project_root()
    params = load_params(root)
    use_case = (params.get("use_cases") or {}).get(args.use_case)
    if use_case is None:
        print(f"llmops migrate: no use case {args.use_case} in params.yaml (conf/config.yaml)", file=sys.stderr)
        return 1
    source = yaml.safe_load((root / "conf" / "use_cases" / f"{args.use_case}.yaml").read_text(encoding="utf-8"))
    try:
        migration, name, config = migrate.migrate_use_case(
            root, args.use_case, source[args.use_case], str(params["llm"].get("api") or "completion")
        )
    except migrate.MigrationError as exc:
        print(f"llmops migrate: {exc}", file=sys.stderr)
        return 1
    target = root / "conf" / "use_cases" / f"{name}.yaml"
    header = f"# Written by `llmops migrate {args.use_case}`: the use case on its MAF workflow (same data and eval).\n"
    write_text(target, header + yaml.safe_dump({name: config}, sort_keys=False, allow_unicode=True))
    catalogue.register(root / "conf" / "config.yaml", name)
    compose_params(root, [], root / "params.yaml")
    folder = migration.target.relative_to(root)
    print(
        f"migrated {args.use_case} ({migration.kind}) -> {folder}/workflow.py; "
        f"use case {name}: {target.relative_to(root)}"
    )
    print(f"  converted: {', '.join(migration.converted) or 'nothing'}")
    for note in migration.notes:
        print(f"  note: {note}")
    for where, reason in migration.not_convertible:
        print(f"  NOT CONVERTED {where}: {reason}")
    print(f"next: `dvc repro report@{name}`, then `llmops compare` / the gate compare it with {args.use_case}")
    return 0


def cmd_import_experiment(args: argparse.Namespace) -> int:
    root = project_root()
    result = importer.import_experiment(
        root, args.path.resolve(), args.name, llm_node=args.llm_node, filename=args.file,
        compose=lambda: compose_params(root, [], root / "params.yaml"),
    )  # fmt: skip
    names = ", ".join(name for name, _ in result.use_cases)
    print(f"imported {args.path / args.file} into {result.folder} as use case{'s' * (len(result.use_cases) > 1)} "
          f"{names}; params.yaml composed")  # fmt: skip
    for item in result.copied:
        print(f"  copied  {item}")
    for name, config in result.use_cases:
        print(f"  use case {name}: {config.relative_to(root)}")
        for note in result.choices.get(name, []):
            print(f"    {note}")
    for item in result.not_mapped:
        print(f"  NOT MAPPED  {item}")
    for item in result.notes:
        print(f"  note  {item}")
    for item in dict.fromkeys(result.next_steps):
        print(f"  to do  {item}")
    print("next: `dvc repro` (stages prepare/run/evaluate/report@<use case>)")
    return 0


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
    order = [d.name for d in deploy.spec_for(root, args.use_case, args.env, "local").deployments]
    log = args.log or local.production_log(root, args.env, args.use_case)
    engine.configure(runtime_dir(root))
    result = production.evaluate(root, params, args.use_case, order, log, args.sample, args.seed)
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
    print(f"report: {out / f'{args.use_case}.{args.env}.html'}")
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
    add.set_defaults(handler=cmd_add_use_case)

    new = commands.add_parser("new", help="scaffold a runnable use case (flow, eval flow, sample data, config)")
    new.add_argument("name", help="the use case's name (lower-case Python name)")
    new.add_argument("--kind", required=True, choices=sorted(catalogue.KINDS), help="the standard flow's type")
    new.set_defaults(handler=cmd_new)

    par = commands.add_parser("parity", help="a use case against its `parity.against` (e.g. MAF vs prompt flow)")
    par.add_argument("use_case", help="the candidate use case (its conf has parity: {against: ...})")
    par.add_argument("--rev", default="workspace", help="git revision or experiment (default: the workspace)")
    par.add_argument("--out", type=Path, default=Path("reports/parity"), help="folder for <use case>.md/.json")
    par.set_defaults(handler=cmd_parity)

    mig = commands.add_parser("migrate", help="a use case's prompt flow flow as a MAF workflow (+ use case <name>_maf)")
    mig.add_argument("use_case", help="the use case whose standard flow (DAG or prompty) to migrate")
    mig.set_defaults(handler=cmd_migrate)

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

    dep = commands.add_parser("deploy", help="deploy a use case's variants (conf/deploy/<env>.yaml) to a target")
    dep.add_argument("--use-case", required=True)
    dep.add_argument("--target", default="local", help="local (default), azureml, kubernetes or webapp")
    dep.add_argument("--env", default="dev", help="conf/deploy/<env>.yaml (default: dev)")
    dep.set_defaults(handler=cmd_deploy)

    und = commands.add_parser("undeploy", help="stop a use case's local deployments and router")
    und.add_argument("--use-case", required=True)
    und.add_argument("--env", default="dev")
    und.set_defaults(handler=cmd_undeploy)

    smk = commands.add_parser("smoke", help="call the endpoint with sample-request.json; non-zero exit on failure")
    smk.add_argument("--use-case", required=True)
    smk.add_argument("--env", default="dev")
    smk.add_argument("--target", help="default: the last target deployed")
    smk.add_argument("--url", help="the scoring URL (default: the one recorded by `llmops deploy`)")
    smk.add_argument("--key-env", help="environment variable with the endpoint key (default: from conf/deploy)")
    smk.add_argument("--requests", type=int, default=1, help="how many times to send the sample request")
    smk.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    smk.set_defaults(handler=cmd_smoke)

    rbk = commands.add_parser("rollback", help="restore the previous traffic split (live)")
    rbk.add_argument("--use-case", required=True)
    rbk.add_argument("--env", default="dev")
    rbk.add_argument("--target", help="default: the last target deployed")
    rbk.set_defaults(handler=cmd_rollback)

    evp = commands.add_parser("evaluate-production", help="evaluate each deployment on the production log, compared")
    evp.add_argument("--use-case", required=True)
    evp.add_argument("--env", default="dev")
    evp.add_argument("--log", type=Path, help="production log (default: the local router's, under .llmops/deploy/)")
    evp.add_argument("--sample", type=int, default=200, help="distinct requests evaluated per deployment (seeded)")
    evp.add_argument("--seed", type=int, default=0)
    evp.add_argument("--out", type=Path, default=Path("reports/production"), help="folder for <uc>.<env>.html/.json")
    evp.set_defaults(handler=cmd_evaluate_production)
    gat = commands.add_parser(
        "gate", help="quality gate: thresholds (conf/env) and the baseline revision; exit 1 on fail"
    )
    gat.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    gat.add_argument("--env", help="thresholds of conf/env/<env>.yaml (default: params.yaml's env)")
    gat.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    gat.add_argument("--md", type=Path, help="also write the table as markdown to this file")
    gat.set_defaults(handler=cmd_gate)

    prc = commands.add_parser("pr-comment", help="compose the PR comment (gate, verdicts, flips, metrics diff)")
    prc.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    prc.add_argument("--env", help="thresholds of conf/env/<env>.yaml (default: params.yaml's env)")
    prc.add_argument("--use-case", action="append", help="only this use case (repeatable; default: all)")
    prc.add_argument("--out", type=Path, default=Path("reports/pr-comment.md"), help="where to write the markdown")
    prc.add_argument("--max-flips", type=int, default=10, help="flipped rows shown per use case")
    prc.add_argument("--post", action="store_true", help="create or edit the comment on the PR with `gh`")
    prc.add_argument("--pr", type=int, default=int(os.environ.get("PR_NUMBER") or 0) or None, help="PR number")
    prc.set_defaults(handler=cmd_pr_comment)

    pln = commands.add_parser("plan", help="rows needed to detect a drop, and the drop today's rows detect")
    pln.add_argument("--use-case", required=True)
    pln.add_argument("--detect", type=float, default=0.05, help="the drop to detect (default 0.05: 5 points)")
    pln.add_argument("--alpha", type=float, default=0.05, help="the test's two-sided alpha (default 0.05)")
    pln.set_defaults(handler=cmd_plan)

    siz = commands.add_parser("size-subsets", help="Hydra overrides sizing the subsets of the use cases a PR changed")
    siz.add_argument("--baseline", required=True, metavar="REF", help="git revision or `dvc exp` name, e.g. main")
    siz.add_argument("--env", default="pr", help="conf/env/<env>.yaml: subset.rows and gate.sizing (default: pr)")
    siz.set_defaults(handler=cmd_size_subsets)

    summary = commands.add_parser("summary", help="headline metrics and report paths of every use case")
    summary.set_defaults(handler=cmd_summary)

    args = parser.parse_args(argv)
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
