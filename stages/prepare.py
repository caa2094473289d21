"""Stage `prepare`: validate a use case's dataset, assign stable row ids, apply the env's subset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.conf_schema import ConfError
from stages.core.io import write_jsonl
from stages.core.project import load_params, project_root
from stages.data import datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--out", type=Path, required=True, help="prepared rows (JSON Lines)")
    args = parser.parse_args(argv)

    root = project_root()
    try:
        params = load_params(root)
    except ConfError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    use_case = params["use_cases"][args.use_case]
    source = root / use_case["dataset"]
    try:
        schema = datasets.Schema.from_config(use_case["data"])
        rows = datasets.assign_ids(datasets.load(source, schema, params["prepare"]["max_row_bytes"]), schema, source)
    except datasets.DatasetError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    subset = params["env"]["subset"]
    # a use case a PR changed may get more rows (`llmops size-subsets`); the seeded ranking keeps the small subset's
    # rows among them, so the LLM cache answers those
    size = (subset.get("by_use_case") or {}).get(args.use_case, subset["rows"])
    chosen = datasets.subset(rows, size, subset["seed"])
    write_jsonl(args.out, chosen)
    print(f"prepare {args.use_case}: {len(chosen)} of {len(rows)} rows ({params['env']['name']}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
