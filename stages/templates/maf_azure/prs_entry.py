"""Azure ML parallel run step entry of a MAF workflow packaged by `execution: azure` (stages/engine/maf/azure.py).

The contract of Microsoft's maf-prs-job sample: `init()` once per worker process, `run(mini_batch, context)` once
per mini-batch (one JSON string per row, appended to the `flow_outputs` file), `shutdown()`. The rows of a
mini-batch run at once on one event loop, each on a fresh workflow (worker.py's `execute`, the same code as a local
run). llmops_run.json holds the variant's `create_workflow(**params)` and the flow inputs' dataset columns.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import worker  # noqa: E402 (stages/engine/maf/worker.py, copied beside this file)

_STATE: dict = {}


def init() -> None:
    create, settings = worker.load_package(HERE)
    _STATE.update(create=create, inputs=settings["inputs"], timeout_s=settings.get("row_timeout_s"),
                  loop=asyncio.new_event_loop())  # fmt: skip


async def _row(row: dict, line: int) -> dict:
    started = time.perf_counter()
    inputs = {name: row.get(column) for name, column in _STATE["inputs"].items()}
    outputs, error, _ = await worker.execute(_STATE["create"], inputs, _STATE["timeout_s"])
    record = {"row_id": row.get("row_id"), "outputs": outputs, "error": error,
              "latency_s": round(time.perf_counter() - started, 3)}  # fmt: skip
    return {"line_number": line, "output": record}


def run(mini_batch, context) -> list:
    base = getattr(context, "global_row_index_lower_bound", 0)
    rows = mini_batch.to_dict(orient="records") if hasattr(mini_batch, "to_dict") else list(mini_batch)

    async def batch() -> list:
        return await asyncio.gather(*(_row(row, base + i) for i, row in enumerate(rows)))

    return [json.dumps(result, ensure_ascii=False) for result in _STATE["loop"].run_until_complete(batch())]


def shutdown() -> None:
    loop = _STATE.pop("loop", None)
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
