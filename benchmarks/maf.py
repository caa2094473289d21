"""MAF bulk-run benchmark: the run stage on a MAF workflow beside the same stage on the prompt flow flow it was
migrated from, in one run, against the same stub LLM.

    python benchmarks/maf.py       # (a) prompt flow engine, (b) MAF engine: throughput vs the limit; (c) peak RSS
                                   # (a) and (b) run --repeats times each, interleaved; the median run is kept

The flow is general_qa's few-shot prompty (benchmarks/bulk.py's bench project) and its MAF migration
(`llmops migrate`, stages/engine/migrate.py). Both run through `python -m stages.run` (LLM proxy, cache, per-row
records) at `--concurrency` against the stub answering after `--latency-s`: the limit is concurrency / latency
rows/s. The MAF rows run in one worker process of the MAF environment (async: up to `concurrency` rows in flight).
(c) is the peak RSS of the MAF run's whole process tree (stage + worker) on `--memory-rows` rows. Results:
benchmarks/maf-results.json and benchmarks/maf-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bulk

from stages.engine import migrate
from stages.engine.maf import environment

REPO = bulk.REPO


def add_maf_use_case(project: Path) -> None:
    """The bench flow migrated to MAF (into flow_maf/) as use case `bench_maf`, and the MAF environment the
    repo built (linked, not rebuilt per temp project)."""
    migrate.migrate_prompty(project / "flow", project / "flow_maf", "bench.prompty", {"temperature": 0,
                                                                                     "max_tokens": 12})  # fmt: skip
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    bench = params["use_cases"][bulk.USE_CASE]
    params["use_cases"]["bench_maf"] = {**bench, "flow": str(project / "flow_maf")}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    linked = environment.venv_dir(project)
    linked.parent.mkdir(parents=True, exist_ok=True)
    environment.ensure(REPO)
    os.symlink(environment.venv_dir(REPO), linked, target_is_directory=True)


def run(project: Path, use_case: str, rows: list[dict[str, Any]], label: str, processes: int = 1) -> dict[str, Any]:
    saved = bulk.USE_CASE
    bulk.USE_CASE = use_case
    try:
        return bulk.run_stage(project, rows, label, processes)
    finally:
        bulk.USE_CASE = saved


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rows/s (of an odd number of runs; the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["rows_per_s"])[(len(runs) - 1) // 2]


def markdown(results: dict[str, Any]) -> str:
    pf, maf, memory = results["promptflow_engine"], results["maf_engine"], results["memory"]
    spread = results["maf_processes"]
    limit = results["limit_rows_per_s"]
    return "\n".join([
        "# MAF bulk-run benchmark (benchmarks/maf.py)",
        "",
        f"{results['rows']} rows at concurrency {results['concurrency']} against the stub LLM answering after "
        f"{results['latency_s']:g} s: the limit is {limit:g} rows/s. Machine: {results['machine']['cores']} cores, "
        f"load {results['machine']['load_average_before']} before, "
        f"{results['machine'].get('load_average_after')} after.",
        "",
        f"Each engine ran {len(results['rows_per_s_each_run']['pf'])} times, interleaved with the other; the table "
        "shows each one's median run (rows/s of every run: prompt flow "
        f"{results['rows_per_s_each_run']['pf']}, MAF {results['rows_per_s_each_run']['maf']}).",
        "",
        "| engine | rows/s (run) | % of limit | rows/s end to end | CPU ms/row | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| prompt flow (in process) | {pf['rows_per_s']} | {pf['rows_per_s'] / limit:.1%} | "
        f"{pf['rows_per_s_end_to_end']} | {pf['cpu_ms_per_row']} | {pf['peak_rss_mb']} |",
        f"| MAF (one async worker) | {maf['rows_per_s']} | {maf['rows_per_s'] / limit:.1%} | "
        f"{maf['rows_per_s_end_to_end']} | {maf['cpu_ms_per_row']} | {maf['peak_rss_mb']} |",
        f"| MAF over {spread['processes']} processes (bulk.processes) | {spread['rows_per_s']} | "
        f"{spread['rows_per_s'] / limit:.1%} | {spread['rows_per_s_end_to_end']} | {spread['cpu_ms_per_row']} | "
        f"{spread['peak_rss_mb']} |",
        "",
        "CPU ms/row counts the stage's process tree as `getrusage` sees it (a MAF worker's CPU is included only",
        "when the stage waited for it at exit).",
        "",
        f"Memory: the MAF run on {memory['rows']} rows peaked at {memory['peak_rss_mb']} MB (stage + worker), "
        f"{memory['rows_per_s']} rows/s.",
        "",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-s", type=float, default=0.1)
    parser.add_argument("--memory-rows", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2, help="(b2): bulk.processes for the MAF run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each engine, interleaved (the median is kept)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": bulk.machine(), "latency_s": args.latency_s,
                               "concurrency": args.concurrency, "rows": args.rows,
                               "limit_rows_per_s": args.concurrency / args.latency_s}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="llmops-maf-bench-"))
    try:
        with bulk.stub(args.latency_s) as base_url:
            project = bulk.make_project(work / "stub", base_url, "stub-model", args.concurrency)
            add_maf_use_case(project)
            runs: dict[str, list[dict[str, Any]]] = {"pf": [], "maf": []}
            for repeat in range(args.repeats):  # interleaved: a change in the machine's load hits both engines
                for label, use_case in (("pf", bulk.USE_CASE), ("maf", "bench_maf")):
                    print(f"({label}, run {repeat + 1}/{args.repeats}) {args.rows} rows at concurrency "
                          f"{args.concurrency}", flush=True)  # fmt: skip
                    runs[label].append(run(project, use_case, bulk.questions(args.rows), f"{label}-{repeat}"))
                    print(f"    {runs[label][-1]}", flush=True)
            results["promptflow_engine"] = median_run(runs["pf"])
            results["maf_engine"] = maf = median_run(runs["maf"])
            results["rows_per_s_each_run"] = {label: [r["rows_per_s"] for r in done] for label, done in runs.items()}
            results["maf_ratio_to_limit"] = round(maf["rows_per_s"] / results["limit_rows_per_s"], 3)
            print(f"(b2) MAF engine over {args.processes} stage worker processes (bulk.processes)", flush=True)
            results["maf_processes"] = spread = run(project, "bench_maf", bulk.questions(args.rows), "maf2",
                                                    args.processes)  # fmt: skip
            results["maf_ratio_to_limit_processes"] = round(spread["rows_per_s"] / results["limit_rows_per_s"], 3)
            print(f"    {spread}", flush=True)
            print(f"(c) MAF memory: {args.memory_rows} rows", flush=True)
            results["memory"] = run(project, "bench_maf", bulk.questions(args.memory_rows), "memory")
            print(f"    {results['memory']}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    (args.out / "maf-results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "maf-results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
