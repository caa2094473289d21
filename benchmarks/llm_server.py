"""Embedded LLM benchmark: our llama.cpp server command against llama_cpp.server's defaults, in one run.

    python benchmarks/llm_server.py              # 3 rounds, alternating, 24 rows
    python benchmarks/llm_server.py --rounds 5 --rows 48

Each round starts one server per command (stages/llm/llm_server.server_command; "defaults" is the same command
without `--logits_all False`, i.e. llama_cpp.server's default of computing every prompt token's logits), sends it
what run@web_classification sends (its v1 few-shot prompt over the dataset's first `--rows` rows, temperature 0,
max_tokens 6, one at a time), and records the wall time and the server's CPU time (all its threads) of
those requests. The two commands alternate within a round, so a busy machine slows both alike; the results are the
medians and their ratio, and whether both servers gave the same answer to every row (greedy decoding: the change
must not alter what the model says). Needs `make model data`. Written to benchmarks/llm_server-results.json and
benchmarks/llm_server-results.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import side_by_side  # beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.core.project import runtime_dir  # noqa: E402
from stages.llm import llm_server  # noqa: E402

FLOW = ROOT / "use_cases" / "web_classification" / "flows" / "classify"
DATASET = ROOT / "use_cases" / "web_classification" / "data" / "pages.jsonl"
OURS_ONLY = ["--logits_all", "False"]


def _prompts(rows: int) -> list[str]:
    import jinja2

    template = jinja2.Template((FLOW / "classify_v1.jinja2").read_text())
    lines = DATASET.read_text().splitlines()[:rows]
    return [template.render(url=row["url"], text=row["text"]) for row in map(json.loads, lines)]


def _complete(base_url: str, prompt: str, max_tokens: int) -> str:
    body = {"model": "gemma-3-270m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    request = urllib.request.Request(f"{base_url}/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["choices"][0]["text"]


def _one(command: list[str], base_url: str, prompts: list[str]) -> tuple[dict[str, float], list[str]]:
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # ready once it answers
            try:
                _complete(base_url, "Hello", 1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {' '.join(command)}") from None
                time.sleep(0.3)
        process = psutil.Process(server.pid)
        cpu, start = sum(process.cpu_times()[:2]), time.perf_counter()  # user + system, all its threads
        answers = [_complete(base_url, prompt, 6) for prompt in prompts]
        return {"wall_s": time.perf_counter() - start, "cpu_s": sum(process.cpu_times()[:2]) - cpu}, answers
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=24)
    args = parser.parse_args(argv)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = llm_server.ServerSettings("127.0.0.1", port, "gemma-3-270m", 2048, 120)
    ours = llm_server.server_command(settings, llm_server.model_path(runtime_dir(ROOT)))
    at = ours.index(OURS_ONLY[0])
    assert ours[at : at + 2] == OURS_ONLY
    commands = {"ours": ours, "defaults": ours[:at] + ours[at + 2 :]}
    prompts = _prompts(args.rows)

    answers: dict[str, list[str]] = {}

    def measure(name: str) -> dict[str, float]:
        measured, answers[name] = _one(commands[name], settings.base_url, prompts)
        return measured

    middle = side_by_side.medians(side_by_side.alternate(("ours", "defaults"), args.rounds, measure))
    same = sum(a == b for a, b in zip(answers["ours"], answers["defaults"], strict=True))
    machine = side_by_side.machine()
    results = {"date": side_by_side.now(), "machine": machine, "rounds": args.rounds, "rows": args.rows,
               "medians": middle, "defaults_over_ours": side_by_side.ratios(middle, "ours", "defaults"),
               "same_answers": same}  # fmt: skip
    lines = [f"# Embedded LLM: our llama.cpp server command vs llama_cpp.server's defaults ({results['date']})", "",
             f"{machine}; {args.rounds} rounds, alternating; run@web_classification's v1 prompt over {args.rows} "
             "rows, one request at a time, max_tokens 6.", "",
             *side_by_side.table(middle, "ours", "defaults", ("ours (`--logits_all False`)",
                                 "defaults (every prompt token's logits)"),
                                 (("wall_s", "wall time, s"), ("cpu_s", "server CPU time, s")), ratio_digits=2),
             "", f"Same answer from both servers: {same} of {args.rows} rows (greedy decoding)."]  # fmt: skip
    side_by_side.publish("llm_server", results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
