"""Stage `docs_chunk`: split passages into overlapping word windows (`use_cases.<uc>.documents.chunking`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.conf_schema import ConfError
from stages.core.io import read_jsonl, write_jsonl
from stages.core.project import load_params, project_root
from stages.data import documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--passages", type=Path, required=True, help="passages (from docs_extract)")
    parser.add_argument("--out", type=Path, required=True, help="chunks (JSON Lines)")
    args = parser.parse_args(argv)

    try:
        settings = load_params(project_root())["use_cases"][args.use_case]["documents"]["chunking"]
    except ConfError as exc:
        print(f"docs_chunk {args.use_case}: {exc}", file=sys.stderr)
        return 1
    passages = [documents.Passage(**row) for row in read_jsonl(args.passages)]
    try:
        chunks = documents.chunk(passages, settings["words"], settings["overlap"])
    except documents.DocumentError as exc:
        print(f"docs_chunk {args.use_case}: {exc}", file=sys.stderr)
        return 1
    write_jsonl(args.out, (c.to_dict() for c in chunks))
    print(f"docs_chunk {args.use_case}: {len(chunks)} chunks of {settings['words']} words -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
