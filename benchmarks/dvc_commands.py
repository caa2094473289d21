"""DVC command overhead on this project's graph: ruamel.yaml's C parser (ruamel.yaml.clib) against its pure-Python
fallback, side by side in one run.

    python benchmarks/dvc_commands.py --project PATH        # a reproduced copy of the project (every stage up to date)
    python benchmarks/dvc_commands.py --project PATH --rounds 7

DVC reads params.yaml once for every stage that declares a params dependency (29 of the 31 stages here) and parses
dvc.lock and dvc.yaml, all with ruamel.yaml in `typ="safe"` mode, which uses the C parser when ruamel.yaml.clib is
installed and pure Python otherwise. Each round runs `dvc status` and a no-op `dvc repro` twice: once as installed
and once with the C extension hidden (a `_ruamel_yaml` module that fails to import, first on PYTHONPATH), alternating
so a busy machine slows both alike. Results: median CPU seconds (user + system) and wall seconds, and their ratio.
Written to benchmarks/dvc-commands-results.json and benchmarks/dvc-commands-results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = {"dvc status": ["dvc", "status", "-q"], "dvc repro (no-op)": ["dvc", "repro", "-q"]}


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and the processes it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a reproduced copy of the project")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as hidden:
        (Path(hidden) / "_ruamel_yaml.py").write_text("raise ImportError('C parser hidden by the benchmark')\n")
        base = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        setups = {
            "C parser (ruamel.yaml.clib)": base,
            "pure Python": {**base, "PYTHONPATH": os.pathsep.join(filter(None, [hidden, base.get("PYTHONPATH")]))},
        }
        for env in setups.values():  # warm up: DVC's state database, the OS file cache
            _timed(COMMANDS["dvc status"], args.project, env)
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for name, command in COMMANDS.items():
                for setup, env in setups.items():
                    samples.setdefault((name, setup), []).append(_timed(command, args.project, env))
        load_after = os.getloadavg()

    rows = []
    for name in COMMANDS:
        medians = {}
        for setup in setups:
            walls, cpus = zip(*samples[(name, setup)], strict=True)
            medians[setup] = (statistics.median(walls), statistics.median(cpus))
        fast, slow = medians["C parser (ruamel.yaml.clib)"], medians["pure Python"]
        rows.append({"command": name, "c_wall_s": round(fast[0], 2), "c_cpu_s": round(fast[1], 2),
                     "pure_wall_s": round(slow[0], 2), "pure_cpu_s": round(slow[1], 2),
                     "cpu_ratio": round(fast[1] / slow[1], 3)})  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    result = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "rounds": args.rounds,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "rows": rows,
    }
    (HERE / "dvc-commands-results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# DVC command overhead: ruamel.yaml's C parser vs pure Python",
        "",
        f"{result['when']}, commit {result['commit']}: {result['machine']}. Load average {result['load_before']} "
        f"before, {result['load_after']} after (a shared machine: compare the ratios). Medians of {args.rounds} "
        "alternating rounds on a reproduced copy of the project (31 stages, all up to date). Written by "
        "`python benchmarks/dvc_commands.py`.",
        "",
        "| command | C parser: CPU s | wall s | pure Python: CPU s | wall s | CPU ratio (C / pure) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['command']} | {r['c_cpu_s']} | {r['c_wall_s']} | {r['pure_cpu_s']} | {r['pure_wall_s']} | "
            f"**{r['cpu_ratio']}** |"
            for r in rows
        ),
        "",
        "CPU: user + system time of the command and the processes it waited for.",
        "",
    ]
    (HERE / "dvc-commands-results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
