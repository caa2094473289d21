"""Stage `docs_extract`: the text of every PDF and markdown document in a folder, as passages (page / section)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.io import write_jsonl
from stages.data import documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=Path, required=True, help="folder of .pdf and .md documents")
    parser.add_argument("--out", type=Path, required=True, help="passages (JSON Lines)")
    args = parser.parse_args(argv)

    try:
        files = documents.document_files(args.docs)
        passages = [passage for path in files for passage in documents.extract(path)]
    except documents.DocumentError as exc:
        print(f"docs_extract: {exc}", file=sys.stderr)
        return 1
    write_jsonl(args.out, (p.to_dict() for p in passages))
    print(f"docs_extract: {len(files)} documents, {len(passages)} passages -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
