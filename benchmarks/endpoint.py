"""Bounded load test of a deployed endpoint: latency p50/p95/p99, throughput, split and errors.

    LLMOPS_ENDPOINT_KEY=... python benchmarks/endpoint.py --use-case web_classification [--env dev]
        [--requests 500] [--concurrency 8] [--out benchmarks/endpoint-results.md]

Sends `--requests` requests, at most `--concurrency` at a time, to the URL `llmops deploy` recorded (or `--url`),
with inputs cycling over the use case's dataset. Prints a Markdown table and appends it to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from stages import deploy
from stages.core.project import load_params, project_root
from stages.data import datasets
from stages.deploy import smoke
from stages.llm import connections


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--env", default="dev")
    parser.add_argument("--url", help="default: the URL recorded by `llmops deploy`")
    parser.add_argument("--key-env", default="LLMOPS_ENDPOINT_KEY")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--note", default="", help="what the endpoint ran on (e.g. 'stub LLM')")
    parser.add_argument("--out", type=Path, help="append the results (Markdown) to this file")
    args = parser.parse_args(argv)

    root = project_root()
    config = load_params(root)["use_cases"][args.use_case]
    url = args.url or deploy.current(root, args.use_case, args.env)[1]["record"]["url"]
    key = connections.environment(root).get(args.key_env, "")
    if not key:
        print(f"endpoint.py: {args.key_env} is not set", file=sys.stderr)
        return 1
    columns = datasets.input_columns(config["data"]["inputs"])
    rows = [json.loads(line) for line in (root / config["dataset"]).read_text().splitlines() if line.strip()]
    bodies = [{name: rows[i % len(rows)][column] for name, column in columns.items()} for i in range(args.requests)]

    def one(body: dict) -> tuple[int, str, float]:
        status, headers, _, latency = smoke.call(url, key, body, timeout_s=120)
        return status, headers.get(smoke.DEPLOYMENT_HEADER, "?"), latency

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - started
    ok = [latency for status, _, latency in results if status == 200]
    split = Counter(name for _, name, _ in results)
    shares = ", ".join(f"{name} {count / len(results):.1%}" for name, count in sorted(split.items()))
    table = (
        f"\n### {args.use_case}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores"
        f"{', ' + args.note if args.note else ''}\n\n"
        "| requests | concurrency | errors | throughput | latency p50 | latency p95 | latency p99 | mean | split |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {len(results)} | {args.concurrency} | {len(results) - len(ok)} | {len(results) / wall:.1f} req/s "
        f"| {percentile(ok, 0.5) * 1000:.0f} ms | {percentile(ok, 0.95) * 1000:.0f} ms "
        f"| {percentile(ok, 0.99) * 1000:.0f} ms | {statistics.fmean(ok) * 1000 if ok else 0:.0f} ms | {shares} |\n"
    )
    print(table)
    if args.out:
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(table)
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
