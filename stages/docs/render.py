"""Write a use case's document set from its markdown sources: chosen ones rendered to PDF, the rest copied.

Not a pipeline stage: the document set is raw data, tracked with `dvc add` (see use_cases/chat_with_pdf/README.md).
Output is reproducible byte for byte, so re-running it on unchanged sources leaves the DVC hash unchanged.
    python -m stages.docs.render SOURCES OUT --pdf warranty,battery-care
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.io import write_bytes, write_text
from stages.data import documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", type=Path, help="folder of markdown sources")
    parser.add_argument("out", type=Path, help="the document set folder")
    parser.add_argument("--pdf", default="", help="comma-separated ids of the sources to render to PDF")
    args = parser.parse_args(argv)

    as_pdf = {name for name in args.pdf.split(",") if name}
    sources = sorted(args.sources.glob("*.md"))
    unknown = as_pdf - {s.stem for s in sources}
    if unknown:
        print(f"render: --pdf {', '.join(sorted(unknown))}: no such source in {args.sources}", file=sys.stderr)
        return 1
    for source in sources:
        text = source.read_text(encoding="utf-8")
        if source.stem in as_pdf:
            target = args.out / f"{source.stem}.pdf"
            try:
                write_bytes(target, documents.render_pdf(text, str(source)))
            except documents.DocumentError as exc:
                print(f"render: {exc}", file=sys.stderr)
                return 1
        else:
            target = args.out / source.name
            write_text(target, text)
        print(f"render: {source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
