"""Stage `docs_index`: embed every chunk (all-MiniLM-L6-v2) into a vector index folder for exact cosine search."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.core.io import read_jsonl
from stages.data import embeddings, vector_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=Path, required=True, help="chunks (from docs_chunk)")
    parser.add_argument("--out", type=Path, required=True, help="the index folder (vectors.npy, chunks.jsonl)")
    args = parser.parse_args(argv)

    chunks = read_jsonl(args.chunks)
    vectors = embeddings.encode([chunk["text"] for chunk in chunks])
    vector_index.write(args.out, chunks, vectors, embeddings.MODEL_NAME)
    print(f"docs_index: {len(chunks)} chunks x {vectors.shape[1]} dimensions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
