"""`llmops` commands on results: summary, compare, plan, size-subsets, gate, pr-comment."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from stages.cli.compose import env_params
from stages.core import conf_schema
from stages.core.project import load_params, project_root
from stages.metrics import headline
from stages.results import changes
from stages.results import parity as parity_module
from stages.results.formatting import format_usd, headline_text, total_cost
from stages.results.rows import Columns


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


def _touched(root: Path, rev: str) -> set[str]:
    """The files changed since `rev`, and the untracked ones."""
    import subprocess

    diff = subprocess.run(["git", "diff", "--name-only", str(rev)], cwd=root, capture_output=True, text=True)
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=root, capture_output=True,
                               text=True)  # fmt: skip
    return set(diff.stdout.split()) | set(untracked.stdout.split())


def cmd_size_subsets(args: argparse.Namespace) -> int:
    """Print the Hydra overrides that give each use case the PR changed the rows its max_drop needs."""
    import yaml

    from stages.core.yaml_reader import load_yaml
    from stages.results import changes, compare, gate, sizing
    from stages.results.thresholds import parse_thresholds

    root = project_root()
    where = f"conf/env/{args.env}.yaml: gate"
    try:
        # The params the PR's pipeline will run (`make pipeline` composes conf/ for the env), not the committed
        # params.yaml, which a PR that edits conf/ without `llmops params` leaves behind.
        params = env_params(root, args.env, gate.GateConfigError)
        env = params["env"]
        use_cases = list(params["use_cases"])
        thresholds = parse_thresholds(env.get("gate"), use_cases, where)
        caps = sizing.parse_caps((env.get("gate") or {}).get("sizing"), f"{where}.sizing")
        rev = compare.resolve(root, args.baseline)
        lock = load_yaml(compare.read_at(root, "dvc.lock", rev)) or {}
    except (OSError, gate.ERRORS, yaml.YAMLError, conf_schema.ConfError) as exc:
        print(f"size-subsets: {exc}", file=sys.stderr)
        return 2
    small = (env.get("subset") or {}).get("rows")
    if caps is None or small is None:
        print(f"size-subsets: {args.env}.yaml has no gate.sizing or no subset.rows: nothing to size", file=sys.stderr)
        return 0
    touched = _touched(root, rev)
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
    from stages.results.thresholds import parse_thresholds

    params = load_params(root)
    if env and env != params["env"]["name"]:  # another env's thresholds: conf/ composed for it
        params = env_params(root, env, gate.GateConfigError)
    env = params["env"]["name"]
    block = params["env"].get("gate")  # the composed params' (`-S env.gate...` overrides included)
    use_cases = list(params["use_cases"])
    thresholds = parse_thresholds(block, use_cases, f"conf/env/{env}.yaml: gate")
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
    import json

    from stages.core.io import write_text
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

    from stages.core.yaml_reader import load_yaml
    from stages.results import compare

    try:
        texts = compare.read_at(root, "dvc.lock", rev), (root / "dvc.lock").read_text(encoding="utf-8")
        old, new = (load_yaml(text) or {} for text in texts)
    except (OSError, yaml.YAMLError):
        return None
    return old, new


def cmd_gate(args: argparse.Namespace) -> int:
    """Check the workspace's results against thresholds and the baseline revision; exit 1 on any failure."""
    from stages.core.io import write_text
    from stages.results import gate, gate_tables

    root = project_root()
    try:
        env, rev, results = gate_results(root, args.baseline, args.env, args.use_case)
    except gate.ERRORS as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    print(f"quality gate: env {env}, baseline {args.baseline} ({rev[:10]})")
    print(gate_tables.text_table(results))
    print(gate_tables.summary_line(results))
    if args.md:
        write_text(args.md, gate_tables.markdown_table(results) + "\n")
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
