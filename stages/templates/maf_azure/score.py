"""Azure ML online endpoint scoring script of a MAF workflow packaged by the azureml deploy target
(stages/engine/maf/azure.py), in the shape of Microsoft's maf-online-endpoint sample: `init()` once, `run(raw_data)`
per request. A request is the flow's inputs as a JSON object (what prompt flow's endpoint takes); the answer is the
workflow's outputs, each request on a fresh workflow (worker.py's `execute`, the same code as a local run).
"""

import asyncio
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import worker  # noqa: E402 (stages/engine/maf/worker.py, copied beside this file)

_STATE: dict = {}


def init() -> None:
    create, settings = worker.load_package(HERE)
    _STATE.update(create=create, inputs=list(settings["inputs"]), timeout_s=settings.get("row_timeout_s"),
                  loop=asyncio.new_event_loop())  # fmt: skip


def run(raw_data):
    data = json.loads(raw_data) if isinstance(raw_data, (str, bytes)) else raw_data
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object of the flow's inputs")
    inputs = {name: data[name] for name in _STATE["inputs"] if name in data}
    outputs, error, _ = _STATE["loop"].run_until_complete(worker.execute(_STATE["create"], inputs, _STATE["timeout_s"]))
    if error is not None:
        raise RuntimeError(error)
    return outputs
