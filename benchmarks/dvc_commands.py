"""DVC command overhead on this project's graph: ruamel.yaml's C parser (ruamel.yaml.clib) against its pure-Python
fallback, side by side in one run.

    python benchmarks/dvc_commands.py --project PATH        # a reproduced copy of the project (every stage up to date)
    python benchmarks/dvc_commands.py --project PATH --rounds 7

DVC reads params.yaml once for every stage that declares a params dependency and parses dvc.lock and dvc.yaml, all
with ruamel.yaml in `typ="safe"` mode, which uses the C parser when ruamel.yaml.clib is installed and pure Python
otherwise. Each round runs `dvc status` and a no-op `dvc repro` in both set-ups: as installed, and with the C
extension hidden (a `_ruamel_yaml` module that fails to import, first on PYTHONPATH), alternating so a busy machine
slows both alike (benchmarks/side_by_side.py). Results: median CPU seconds (user + system of the command and the
processes it waited for) and wall seconds, and their ratio. Written to benchmarks/dvc_commands-results.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import side_by_side  # beside this script
import yaml

COMMANDS = {"status": ["dvc", "status", "-q"], "repro": ["dvc", "repro", "-q"]}  # repro: a no-op, all up to date


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a reproduced copy of the project")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as hidden:
        (Path(hidden) / "_ruamel_yaml.py").write_text("raise ImportError('C parser hidden by the benchmark')\n")
        base = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        setups = {
            "C": base,
            "pure": {**base, "PYTHONPATH": os.pathsep.join(filter(None, [hidden, base.get("PYTHONPATH")]))},
        }

        def measure(setup: str) -> dict[str, float]:
            measured = {}
            for name, command in COMMANDS.items():
                timed = side_by_side.run_timed(command, args.project, setups[setup])
                measured[f"{name}_wall_s"], measured[f"{name}_cpu_s"] = timed.wall_s, timed.cpu_s
            return measured

        for setup in setups:  # warm up: DVC's state database, the OS file cache
            measure(setup)
        middle = side_by_side.medians(side_by_side.alternate(("C", "pure"), args.rounds, measure))

    stages = len(yaml.safe_load((args.project / "dvc.lock").read_text())["stages"])
    machine = side_by_side.machine()
    results = {"date": side_by_side.now(), "machine": machine, "rounds": args.rounds, "stages": stages,
               "medians": middle, "pure_over_c": side_by_side.ratios(middle, "C", "pure")}  # fmt: skip
    lines = [f"# DVC command overhead: ruamel.yaml's C parser vs pure Python ({results['date']})", "",
             f"{machine}; {args.rounds} rounds, alternating; a reproduced copy of the project ({stages} stages, all up "
             "to date). CPU: user + system time of the command and the processes it waited for.", "",
             *side_by_side.table(middle, "C", "pure", ("C parser (ruamel.yaml.clib)", "pure Python"),
                                 (("status_cpu_s", "`dvc status`, CPU s"), ("status_wall_s", "`dvc status`, wall s"),
                                  ("repro_cpu_s", "no-op `dvc repro`, CPU s"),
                                  ("repro_wall_s", "no-op `dvc repro`, wall s")), ratio_digits=2)]  # fmt: skip
    side_by_side.publish("dvc_commands", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
