"""Bulk-run benchmark: our run stage against prompt flow's own batch run, on the same flow and data, in one run.

    python benchmarks/bulk.py              # (a) throughput vs the limit, (b) vs prompt flow, (c) peak RSS on 10k rows
    python benchmarks/bulk.py --embedded   # also (d): overhead over the embedded model's own request times

(a) The run stage (`python -m stages.run`, LLM proxy and cache included) runs `--rows` rows at `--concurrency`
    against the stub LLM (tests/stub_llm.py, a thread per connection) answering after a fixed `--latency-s`;
    the limit is concurrency / latency rows/s. (a2) is the same run over `--processes` worker processes
    (`bulk.processes`): the proxy stays in the stage's process, the flow's CPU work moves to the workers.
    (a3) is the same run as dvc.yaml runs it, writing one trace per row (`--traces`): prompt flow's node spans
    and our row and LLM spans, redacted and encoded as OTLP JSON. Side by side with (a), its cost per row.
(b) Prompt flow's batch run, `PFClient().run(flow=..., data=..., column_mapping=...)` at its default settings, on
    the same .prompty flow and the same rows against the same stub.
(c) The peak RSS of the run stage's whole process tree (sampled with psutil) on a `--memory-rows` run.
(d) With --embedded only: starts the embedded LLM on a free port with `llmops llm start`, runs the stage on
    `--embedded-rows` rows through a relay that times each request, and compares the stage's wall time with
    the sum of the model's request times (llama.cpp answers one request at a time).
The dataset is synthetic (distinct questions, so the LLM cache never hits); everything is written to a temp
folder except the results: benchmarks/results.json and benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
USE_CASE = "bench"
PROMPT = REPO / "use_cases" / "general_qa" / "flows" / "answer" / "answer.prompty"


def questions(count: int) -> list[dict[str, Any]]:
    """Distinct short questions (prepared rows: row_id + the flow's input)."""
    return [{"row_id": f"q{i:05d}", "question": f"What is {i} plus {i % 97}?"} for i in range(count)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_flow(folder: Path, base_url: str, model: str) -> Path:
    """general_qa's few-shot prompty, with a configuration pointing at `base_url` (prompt flow's batch run uses
    it; our engine replaces it with the run's connection, through the LLM proxy)."""
    front, body = PROMPT.read_text(encoding="utf-8").split("---\n", 2)[1:]
    spec = yaml.safe_load(front)
    spec["model"]["configuration"] = {"type": "openai", "base_url": base_url, "api_key": "unused", "model": model}
    folder.mkdir(parents=True, exist_ok=True)
    flow = folder / "bench.prompty"
    flow.write_text(f"---\n{yaml.safe_dump(spec, sort_keys=False)}---\n{body}", encoding="utf-8")
    return flow


def make_project(root: Path, base_url: str, model: str, concurrency: int, server_port: int = 0) -> Path:
    """A minimal project the run stage accepts: .dvc/, conf/config.yaml and a params.yaml holding the repo's
    bulk, llm_cache and server blocks, the `local` connection pointed at `base_url`, and one prompty use case."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "config.yaml").write_text("# benchmark project: params.yaml is written by benchmarks/bulk.py\n")
    write_flow(root / "flow", base_url, model)
    llm = {**params["llm"], "base_url": base_url, "model": model, "concurrency": concurrency}
    use_case = {  # general_qa's config (the schema's required keys), on the bench flow
        **params["use_cases"]["general_qa"],
        "flow": str(root / "flow"),
        "data": {"inputs": ["question"], "label": "answer"},
        "variant": "v1",
        "baseline": "v1",
        "variants": {"v1": {"prompt": {"completion": "bench.prompty"}, "params": {"temperature": 0, "max_tokens": 12}}},
    }
    server = {**params["server"], "port": server_port or params["server"]["port"]}
    composed = {"llm": llm, "bulk": params["bulk"], "llm_cache": params["llm_cache"], "server": server,
                "prepare": params["prepare"],
                "prices": params["prices"], "use_cases": {USE_CASE: use_case}}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(composed, sort_keys=False), encoding="utf-8")
    return root


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants every `every_s`; keeps the peak."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.root, self.every_s, self.peak_bytes = psutil.Process(pid), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        total = 0
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child_env(project: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PF_", "LLMOPS_"))}
    env.update(PYTHONPATH=str(REPO), PF_HOME_DIRECTORY=str(project / ".llmops" / "pf"), DVC_NO_ANALYTICS="1")
    return env


def timed(command: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run `command`; its wall time and the peak RSS of its process tree. Output goes to `log`."""
    with log.open("w") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=child_env(cwd), stdout=out, stderr=subprocess.STDOUT)
        with TreeSampler(process.pid) as sampler:
            code = process.wait()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and the children it waited for
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {code}; see {log}:\n{log.read_text()[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"process_wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(sampler.peak_bytes / 2**20, 1)}  # fmt: skip


def set_processes(project: Path, processes: int) -> None:
    """The project's `bulk.processes`: how many worker processes the run stage spreads rows over."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["bulk"]["processes"] = processes
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_stage(
    project: Path, rows: list[dict[str, Any]], label: str, processes: int = 1, traces: bool = False
) -> dict[str, Any]:
    """Our run stage over `rows` in `project` with `processes` worker processes (a fresh LLM cache, so every
    request reaches the LLM), writing one trace per row if `traces` (as dvc.yaml runs it)."""
    set_processes(project, processes)
    folder = project / "runs" / label
    folder.mkdir(parents=True)
    write_jsonl(folder / "prepared.jsonl", rows)
    command = [sys.executable, "-m", "stages.run", "--use-case", USE_CASE, "--rows", str(folder / "prepared.jsonl"),
               "--out", str(folder / "outputs"), "--summary", str(folder / "summary.json"),
               "--operations", str(folder / "operations.json"), "--cache", str(folder / "llm_cache")]  # fmt: skip
    if traces:
        command += ["--traces", str(folder / "traces.jsonl")]
    measured = timed(command, project, folder / "log.txt")
    summary = json.loads((folder / "summary.json").read_text())
    operations = json.loads((folder / "operations.json").read_text())  # wall time and LLM cache counts
    outputs = [json.loads(line) for line in (folder / "outputs" / "v1.jsonl").read_text().splitlines()]
    assert [row["row_id"] for row in outputs] == [row["row_id"] for row in rows], "outputs not in input order"
    if summary["errors"]:
        raise RuntimeError(f"{label}: {summary['errors']} rows failed; see {folder / 'log.txt'}")
    traced = {}
    if traces:  # what was measured is real tracing: a trace per row, each with the flow's spans
        from stages.observability import otlp_json

        spans = otlp_json.read(folder / "traces.jsonl")
        per_trace = otlp_json.traces(spans)
        if len(per_trace) != len(rows):
            raise RuntimeError(f"{label}: {len(per_trace)} traces for {len(rows)} rows")
        traced = {"traces": len(per_trace), "spans_per_row": round(len(spans) / len(rows), 2),
                  "trace_file_mb": round((folder / "traces.jsonl").stat().st_size / 2**20, 1)}  # fmt: skip
    return {
        "rows": len(rows),
        "processes": processes,
        "run_wall_s": operations["wall_s"],  # the stage's own timing of its rows (flow loaded, proxy running)
        "rows_per_s": round(len(rows) / operations["wall_s"], 1),
        "rows_per_s_end_to_end": round(len(rows) / measured["process_wall_s"], 1),
        "cpu_ms_per_row": round(measured["cpu_s"] * 1000 / len(rows), 2),  # interpreter start and imports included
        "cache": operations["cache"],
        **traced,
        **measured,
    }


_PF_SCRIPT = """
import json, sys, time
from promptflow.client import PFClient

if __name__ == "__main__":  # prompt flow's batch workers re-import this file
    flow, data, out = sys.argv[1:4]
    started = time.perf_counter()
    run = PFClient().run(flow=flow, data=data, column_mapping={"question": "${data.question}"}, stream=False)
    wall = time.perf_counter() - started
    client = PFClient()
    details = client.get_details(run, all_results=True)
    errors = int(details["outputs.output"].isna().sum()) if "outputs.output" in details else len(details)
    json.dump({"call_wall_s": wall, "status": run.status, "rows": len(details), "errors": errors}, open(out, "w"))
"""


def promptflow_batch(project: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Prompt flow's own batch run of the same flow over the same rows, at its default settings."""
    folder = project / "runs" / "promptflow"
    folder.mkdir(parents=True)
    data = folder / "data.jsonl"
    write_jsonl(data, [{"question": row["question"]} for row in rows])
    script = folder / "pf_batch.py"
    script.write_text(_PF_SCRIPT)
    home = project / ".llmops" / "pf"
    home.mkdir(parents=True, exist_ok=True)
    (home / "pf.yaml").write_text("telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    far = "2999-01-01 00:00:00.000000"
    (home / "pf_version_check.json").write_text(json.dumps({"last_check_time": far, "last_hint_time": far}))
    out = folder / "result.json"
    measured = timed([sys.executable, str(script), str(project / "flow" / "bench.prompty"), str(data), str(out)],
                     project, folder / "log.txt")  # fmt: skip
    result = json.loads(out.read_text())
    if result["status"] != "Completed" or result["errors"] or result["rows"] != len(rows):
        raise RuntimeError(f"prompt flow's batch run: {result}; see {folder / 'log.txt'}")
    return {
        "rows": len(rows),
        "run_wall_s": round(result["call_wall_s"], 2),  # PFClient.run, from the call to its return
        "rows_per_s": round(len(rows) / result["call_wall_s"], 1),
        "rows_per_s_end_to_end": round(len(rows) / measured["process_wall_s"], 1),
        "cpu_ms_per_row": round(measured["cpu_s"] * 1000 / len(rows), 2),  # its worker processes included
        **measured,
    }


@contextlib.contextmanager
def stub(latency_s: float) -> Iterator[str]:
    """The stub LLM answering every request after `latency_s`; yields its base URL."""
    command = [sys.executable, str(REPO / "tests" / "stub_llm.py"), "--port", "0", "--delay-s", str(latency_s)]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        match = re.search(r"listening on (http://\S+)", process.stdout.readline())
        if not match:
            raise RuntimeError("the stub LLM did not start")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


class TimingRelay:
    """Forwards requests to `upstream` one by one as they come and records how long each took upstream."""

    def __init__(self, upstream: str) -> None:
        self.host, port = upstream.split("//", 1)[1].split("/", 1)[0].split(":")
        self.port, self.durations_s = int(port), []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection(relay.host, relay.port, timeout=600)
                started = time.perf_counter()
                connection.request(self.command, self.path, body=body or None, headers={
                    "Content-Type": "application/json"})  # fmt: skip
                response = connection.getresponse()
                data = response.read()
                if self.command == "POST":
                    relay.durations_s.append(time.perf_counter() - started)
                connection.close()
                self.send_response(response.status)
                self.send_header("Content-Type", response.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def embedded(work: Path, count: int) -> dict[str, Any]:
    """(d): the run stage on the embedded model (concurrency 1) vs the sum of the model's own request times."""
    from stages.core.project import runtime_dir
    from stages.llm import llm_server

    port = free_port()
    settings = yaml.safe_load((REPO / "params.yaml").read_text())["server"]
    project = make_project(work / "embedded", f"http://127.0.0.1:{port}/v1", settings["model_alias"], 1, port)
    models = runtime_dir(project) / "models"  # share the repo's assembled model (242 MB) instead of a copy
    models.parent.mkdir(parents=True, exist_ok=True)
    models.symlink_to(llm_server.model_path(runtime_dir(REPO)).parent, target_is_directory=True)
    llmops = [str(Path(sys.executable).parent / "llmops"), "llm"]
    subprocess.run([*llmops, "start"], cwd=project, env=child_env(project), check=True)
    try:
        relay = TimingRelay(f"http://127.0.0.1:{port}/v1")
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["llm"]["base_url"] = relay.base_url
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = run_stage(project, questions(count), "embedded")
    finally:
        subprocess.run([*llmops, "stop"], cwd=project, env=child_env(project), check=False)
    model_s = sum(relay.durations_s)
    return {**result, "model_requests": len(relay.durations_s), "model_time_s": round(model_s, 2),
            "overhead_ratio": round(result["run_wall_s"] / model_s, 3)}  # fmt: skip


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "commit": commit.stdout.strip(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(results: dict[str, Any]) -> str:
    m, a, pf, mem = results["machine"], results["ours"], results.get("promptflow"), results["memory"]
    limit = results["limit_rows_per_s"]
    lines = [
        "# Bulk-run benchmark results",
        "",
        f"{m['date']}, commit {m['commit']}: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, Python "
        f"{m['python']}. Load average {m['load_average_before']} before, {m['load_average_after']} after (the "
        "machine is shared: compare ratios, not absolute numbers). Written by `python benchmarks/bulk.py`.",
        "",
        f"Stub LLM: fixed {results['latency_s'] * 1000:g} ms per request; limit {results['concurrency']} / "
        f"{results['latency_s']:g} s = {limit:g} rows/s.",
        "",
        "| measurement | rows | concurrency | run wall (s) | rows/s | ratio | process wall (s) | CPU per row (ms) "
        "| peak RSS of the process tree (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| (a) our run stage vs the limit | {a['rows']} | {results['concurrency']} | {a['run_wall_s']} | "
        f"{a['rows_per_s']} | {results['ratio_to_limit']:.1%} of {limit:g} rows/s | {a['process_wall_s']} | "
        f"{a['cpu_ms_per_row']} | {a['peak_rss_mb']} |",
    ]
    if spread := results.get("ours_processes"):
        lines.append(
            f"| (a2) the same, over {spread['processes']} worker processes (`bulk.processes`) | {spread['rows']} | "
            f"{results['concurrency']} | {spread['run_wall_s']} | {spread['rows_per_s']} | "
            f"**{results['ratio_to_limit_processes']:.1%}** of {limit:g} rows/s | {spread['process_wall_s']} | "
            f"{spread['cpu_ms_per_row']} | {spread['peak_rss_mb']} |"
        )
    if traced := results.get("ours_traced"):
        lines.append(
            f"| (a3) the same as dvc.yaml runs it: one trace per row (`--traces`, {traced['spans_per_row']} spans per "
            f"row) | {traced['rows']} | {results['concurrency']} | {traced['run_wall_s']} | {traced['rows_per_s']} | "
            f"**{results['ratio_to_limit_traced']:.1%}** of {limit:g} rows/s | {traced['process_wall_s']} | "
            f"{traced['cpu_ms_per_row']} | {traced['peak_rss_mb']} |"
        )
    if pf:
        lines.append(
            f"| (b) prompt flow `PFClient.run`, defaults | {pf['rows']} | default (4 workers) | {pf['run_wall_s']} | "
            f"{pf['rows_per_s']} | ours / pf: {results['ratio_to_promptflow']:.2f}x (end to end "
            f"{results['ratio_to_promptflow_end_to_end']:.2f}x) | {pf['process_wall_s']} | {pf['cpu_ms_per_row']} | "
            f"{pf['peak_rss_mb']} |"
        )
    lines.append(
        f"| (c) our run stage, memory | {mem['rows']} | {results['concurrency']} | {mem['run_wall_s']} | "
        f"{mem['rows_per_s']} | {mem['rows_per_s'] / limit:.1%} of the limit | {mem['process_wall_s']} | "
        f"{mem['cpu_ms_per_row']} | **{mem['peak_rss_mb']}** (limit 500) |"
    )
    if emb := results.get("embedded"):
        lines.append(
            f"| (d) our run stage on the embedded model | {emb['rows']} | 1 | {emb['run_wall_s']} | "
            f"{emb['rows_per_s']} | run wall / model time {emb['overhead_ratio']:.3f} (model {emb['model_time_s']} s) "
            f"| {emb['process_wall_s']} | {emb['cpu_ms_per_row']} | {emb['peak_rss_mb']} |"
        )
    else:
        lines.append("| (d) embedded model overhead | | | | | not measured: `--embedded` | | | |")
    lines += [
        "",
        f"Our stage's CPU per row without its start-up (a 1-row run subtracted): {a['cpu_ms_per_row_in_loop']} ms, "
        f"so one core runs at most {a['one_core_ceiling_rows_per_s']} rows/s of it "
        f"({a['one_core_ceiling_rows_per_s'] / limit:.0%} of the limit) when no other job competes for it.",
        "",
    ]
    if traced:
        lines += [
            f"Tracing every row (a3 - a, side by side in this run): {results['tracing_cpu_ms_per_row']} ms of CPU per "
            f"row more, {results['tracing_cpu_ratio']:.2f}x the CPU of (a); {traced['trace_file_mb']} MB of OTLP JSON "
            f"for {traced['rows']} rows.",
            "",
        ]
    lines += [
        "run wall: our stage's own timing of its rows (`wall_s` in run/operations.json: flow loaded, proxy up), or "
        "the `PFClient.run` call for prompt flow; process wall: the whole command, interpreter start included. "
        "rows/s = rows / run wall. CPU per row: user + system time of the whole command (and the processes it "
        "waited for) / rows; one Python process runs about one core's worth of it at most.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-s", type=float, default=0.1)
    parser.add_argument("--processes", type=int, default=2, help="(a2): bulk.processes for the same run")
    parser.add_argument("--memory-rows", type=int, default=10_000)
    parser.add_argument("--skip-promptflow", action="store_true")
    parser.add_argument("--embedded", action="store_true", help="also (d): starts the embedded LLM on a free port")
    parser.add_argument("--embedded-rows", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, outputs)")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "latency_s": args.latency_s, "concurrency": args.concurrency}
    limit = args.concurrency / args.latency_s
    results["limit_rows_per_s"] = limit
    work = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    try:
        with stub(args.latency_s) as base_url:
            project = make_project(work / "stub", base_url, "stub-model", args.concurrency)
            print(f"(a) our run stage: {args.rows} rows at concurrency {args.concurrency}", flush=True)
            startup = run_stage(project, questions(1), "one-row")  # interpreter, imports, flow load
            results["ours"] = ours = run_stage(project, questions(args.rows), "ours")
            results["ratio_to_limit"] = round(ours["rows_per_s"] / limit, 3)
            # CPU per row without the start-up; one process runs at most one core's worth of Python at a time.
            ours["cpu_ms_per_row_in_loop"] = round((ours["cpu_s"] - startup["cpu_s"]) * 1000 / (args.rows - 1), 2)
            ours["one_core_ceiling_rows_per_s"] = round(1000 / ours["cpu_ms_per_row_in_loop"], 1)
            print(f"    {results['ours']}", flush=True)
            print("(a3) the same as dvc.yaml runs it: one trace per row", flush=True)
            results["ours_traced"] = traced = run_stage(project, questions(args.rows), "traced", traces=True)
            results["ratio_to_limit_traced"] = round(traced["rows_per_s"] / limit, 3)
            results["tracing_cpu_ms_per_row"] = round(traced["cpu_ms_per_row"] - ours["cpu_ms_per_row"], 2)
            results["tracing_cpu_ratio"] = round(traced["cpu_s"] / ours["cpu_s"], 2)
            print(f"    {traced}", flush=True)
            if args.processes > 1:
                print(f"(a2) the same over {args.processes} worker processes (bulk.processes)", flush=True)
                results["ours_processes"] = spread = run_stage(project, questions(args.rows), "spread", args.processes)
                results["ratio_to_limit_processes"] = round(spread["rows_per_s"] / limit, 3)
                print(f"    {spread}", flush=True)
            if not args.skip_promptflow:
                print(f"(b) prompt flow's batch run: {args.rows} rows, default settings", flush=True)
                results["promptflow"] = pf = promptflow_batch(project, questions(args.rows))
                results["ratio_to_promptflow"] = round(results["ours"]["rows_per_s"] / pf["rows_per_s"], 2)
                results["ratio_to_promptflow_end_to_end"] = round(
                    results["ours"]["rows_per_s_end_to_end"] / pf["rows_per_s_end_to_end"], 2
                )
                print(f"    {pf}", flush=True)
            print(f"(c) memory: {args.memory_rows} rows at concurrency {args.concurrency}", flush=True)
            results["memory"] = run_stage(project, questions(args.memory_rows), "memory")
            print(f"    {results['memory']}", flush=True)
        if args.embedded:
            print(f"(d) embedded model: {args.embedded_rows} rows at concurrency 1", flush=True)
            results["embedded"] = embedded(work, args.embedded_rows)
            print(f"    {results['embedded']}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
