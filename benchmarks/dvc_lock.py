"""DVC's bookkeeping as the catalogue grows: one `dvc.lock` for every use case (this project's layout) against one
`dvc.yaml` and `dvc.lock` per use case, side by side in one run.

    python benchmarks/dvc_lock.py                      # 8 and 32 use cases, 3 rounds of a one-use-case edit
    python benchmarks/dvc_lock.py --sizes 4 16 64 --rounds 5

After each stage it runs, DVC rewrites the whole lock file of that stage's `dvc.yaml` with ruamel.yaml's pure-Python
round trip, so the cost of a stage's bookkeeping grows with the lock, and a full reproduction's with the square of
the number of use cases. This measures it on synthetic projects that have this project's stage graph per use case
(prepare, run, evaluate, report, with the params, deps and outs our dvc.yaml declares, so each use case's lock
entries have our size) and stage commands that only write their outputs (a shell line each: what is left is DVC's
own work). Two layouts:
- `one`: a top-level dvc.yaml whose `foreach` runs over `use_cases` in params.yaml, as ours does;
- `per`: `use_cases/<uc>/dvc.yaml` with the same four stages (`wdir: ../..`, so paths and params.yaml are the
  same), each with its own dvc.lock; `dvc repro -P` runs them all.
Per size: a first `dvc repro` of everything (once per layout), then rounds of what a prompt edit does: one use case's
variant params change, its run, evaluate and report stages rerun (alternating the layouts within each round,
benchmarks/side_by_side.py). CPU: user + system seconds of `dvc` and the shell lines it ran. Written to
benchmarks/dvc_lock-results.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import side_by_side  # beside this script
import yaml

REPO = Path(__file__).resolve().parent.parent
KINDS = ("prepare", "run", "evaluate", "report")
TEMPLATE_USE_CASE = "web_classification"  # its params subtree is copied for every synthetic use case
SHARED_FILES = ("data/_code/prepare.json", "data/_code/run.json", "data/_code/evaluate.json", "data/_code/report.json")


def _timed_repro(layout: str, root: Path, env: dict[str, str], stages: int) -> tuple[float, float]:
    """(wall s, CPU s) of `dvc repro` in `root`; fails loudly unless it ran exactly `stages` stages."""
    timed = side_by_side.run_timed(_repro(layout), root, env)
    if (ran := timed.result.stdout.count("Running stage")) != stages:
        raise SystemExit(f"dvc repro in {root} ran {ran} stages, not {stages}:\n{timed.result.stdout}")
    return timed.wall_s, timed.cpu_s


def _writes(path: str) -> str:
    """A shell line that writes `path` (a folder when it has no suffix) with content that changes on every run, so
    that the stages downstream rerun as they would after a real edit."""
    if Path(path).suffix:
        return f"mkdir -p {Path(path).parent} && date +%s%N > {path}"
    return f"mkdir -p {path} && date +%s%N > {path}/part.jsonl"


def _stage_templates() -> dict[str, dict]:
    """Our dvc.yaml's four `foreach` stage bodies, each command replaced by one that writes the stage's outputs."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    templates = {}
    for kind in KINDS:
        body = copy.deepcopy(stages[kind]["do"])
        outputs = []
        for section in ("outs", "metrics", "plots"):
            for entry in body.get(section) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                outputs.append(path)
        body.pop("plots", None)  # our plot templates are not in the synthetic project: plain outputs instead
        body.setdefault("outs", []).extend({path: {"cache": False}} for path in outputs if "/plots/" in path)
        body["cmd"] = " && ".join(_writes(path) for path in outputs)
        templates[kind] = body
    return templates


def _params(size: int) -> tuple[dict, list[str]]:
    """params.yaml with our shared sections and `size` copies of the template use case (their own data and flows)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    template = params["use_cases"][TEMPLATE_USE_CASE]
    names = [f"uc{i:03d}" for i in range(size)]
    params["use_cases"] = {}
    for name in names:
        use_case = copy.deepcopy(template)
        use_case.update(dataset=f"use_cases/{name}/data/rows.jsonl", flow=f"use_cases/{name}/flows/flow",
                        eval_flow=f"use_cases/{name}/flows/evaluate")  # fmt: skip
        params["use_cases"][name] = use_case
    return params, names


def _substitute(value: object, name: str, item: dict) -> object:
    """`${key}` and `${item.<field>}` of a foreach body, as DVC interpolates them for one use case."""
    if isinstance(value, str):
        for field in ("dataset", "flow", "eval_flow"):
            value = value.replace(f"${{item.{field}}}", str(item[field]))
        return value.replace("${key}", name)
    if isinstance(value, list):
        return [_substitute(v, name, item) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, name, item): _substitute(v, name, item) for k, v in value.items()}
    return value


def build(root: Path, layout: str, size: int, env: dict[str, str]) -> dict[str, float]:
    """A synthetic project of `size` use cases in `layout`, committed, then its first `dvc repro` (timed)."""
    root.mkdir(parents=True)
    params, names = _params(size)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for shared in SHARED_FILES:
        (root / shared).parent.mkdir(parents=True, exist_ok=True)
        (root / shared).write_text("{}\n")
    for name in names:
        use_case = params["use_cases"][name]
        flows = (f"{use_case['flow']}/flow.dag.yaml", f"{use_case['eval_flow']}/flow.dag.yaml")
        for path in (use_case["dataset"], *flows):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(f"{name}\n")
    templates = _stage_templates()
    if layout == "one":
        stages = {kind: {"foreach": "${use_cases}", "do": templates[kind]} for kind in KINDS}
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    else:
        for name in names:
            body = {kind: {"wdir": "../..", **_substitute(templates[kind], name, params["use_cases"][name])}
                    for kind in KINDS}  # fmt: skip
            (root / "use_cases" / name / "dvc.yaml").write_text(yaml.safe_dump({"stages": body}, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "synthetic project"]):  # fmt: skip
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    wall, cpu = _timed_repro(layout, root, env, stages=4 * size)
    locks = sum(p.stat().st_size for p in root.rglob("dvc.lock"))
    return {"first_repro_wall_s": wall, "first_repro_cpu_s": cpu, "lock_kb": locks / 1024,
            "lock_kb_per_use_case": locks / 1024 / size, "stages": 4 * size}  # fmt: skip


def _repro(layout: str) -> list[str]:
    return ["dvc", "repro"] if layout == "one" else ["dvc", "repro", "-P"]


def edit_one_use_case(root: Path, layout: str, round_: int, env: dict[str, str]) -> dict[str, float]:
    """A prompt edit's bookkeeping: uc000's variant params change; `dvc repro` reruns its run, evaluate, report."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["use_cases"]["uc000"]["variants"]["v1"]["params"]["max_tokens"] = 100 + round_
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    wall, cpu = _timed_repro(layout, root, env, stages=3)
    return {"edit_repro_wall_s": wall, "edit_repro_cpu_s": cpu}


def _edits(roots: dict[str, Path], env: dict[str, str]) -> Callable[[str], dict[str, float]]:
    """`measure(layout)` for side_by_side.alternate: each call sets the edited param to a value not used before."""
    values = itertools.count()
    return lambda layout: edit_one_use_case(roots[layout], layout, next(values), env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="numbers of use cases")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the one-use-case edit, per size")
    args = parser.parse_args(argv)
    if shutil.which("dvc") is None:
        raise SystemExit("dvc is not on PATH: run from the project's .venv (make setup)")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
    results: dict = {"machine": side_by_side.machine(), "when": side_by_side.now(), "rounds": args.rounds, "sizes": {}}
    lines = [f"# DVC's bookkeeping: one dvc.lock vs one per use case ({results['when']})", "",
             f"{results['machine']}; synthetic projects with this project's four stages per use case (params, deps "
             "and outs as in dvc.yaml), commands that only write their outputs. CPU: user + system seconds of `dvc` "
             f"and what it ran. Edit: one use case's variant params, then `dvc repro` (its run, evaluate and report "
             f"rerun), median of {args.rounds} rounds, layouts alternating.", "",
             "| use cases (stages) | lock KB: one / per use case | first `dvc repro` CPU s: one | per | ratio "
             "| edit `dvc repro` CPU s: one | per | ratio |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dvc-lock-bench-") as scratch:
        for size in args.sizes:
            roots = {layout: Path(scratch) / f"{layout}-{size}" for layout in ("one", "per")}
            first = {}
            for layout, root in roots.items():
                first[layout] = build(root, layout, size, env)
                print(f"{size} use cases, {layout}: {first[layout]}", file=sys.stderr)
            runs = side_by_side.alternate(("one", "per"), args.rounds, _edits(roots, env))
            middle = side_by_side.medians(runs)
            results["sizes"][size] = {"first": first, "edit_runs": runs, "edit_median": middle}
            one, per = first["one"], first["per"]
            lines.append(
                f"| {size} ({4 * size}) | {one['lock_kb']:.0f} / {per['lock_kb_per_use_case']:.1f} "
                f"| {one['first_repro_cpu_s']:.1f} | {per['first_repro_cpu_s']:.1f} "
                f"| {one['first_repro_cpu_s'] / per['first_repro_cpu_s']:.2f}x "
                f"| {middle['one']['edit_repro_cpu_s']:.2f} | {middle['per']['edit_repro_cpu_s']:.2f} "
                f"| {middle['one']['edit_repro_cpu_s'] / middle['per']['edit_repro_cpu_s']:.2f}x |"
            )
    side_by_side.publish("dvc_lock", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
