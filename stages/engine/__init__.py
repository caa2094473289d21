"""The flow engine seam: how a use case's flow folder is loaded for a variant and an LLM, and how its rows run.

Modules (the rest of the toolkit uses the names below, as `engine.FlowSession` etc.; loaded on first use, so
`from stages import engine` costs nothing and imports no engine library):

- `kinds`: `FlowKind`, `FlowInterface` (a flow's declared inputs and outputs), `FlowError`.
- `binding`: the ONE owner of "a variant and an LLM meet a flow": `LLMBinding` and, per flow kind, what the binding
  sets where. Rendered in memory by an engine adapter (local runs) and on disk by `bake` (served flows, Azure ML).
- `bake`: a flow folder with one variant written in (deterministic bytes; `${env:...}` instead of secrets).
- `requirements`: a flow's requirements.txt checked before it runs.
- `runtime`: the row runtime (concurrency in threads or worker processes, row timeouts, input order, per-row errors
  and warnings). Knows nothing of any engine.
- `session`: `FlowSession`, a flow loaded once by its engine and run through the runtime.
- `staging`: `run_copy`, the copy of a flow folder a session runs (`FlowSession(copies=...)`): what the flow
  writes beside its code at run time stays out of the tracked folder.
- `protocol`: the interface an engine implements; `registry`: the engines, asked in order: `detect` (which
  engine runs a folder, and its kind), `interface` (what it declares).
- `promptflow/`: the prompt flow adapter, the ONLY code that imports `promptflow` (its private hooks and patches in
  `promptflow/hooks.py`; its Azure ML runs, Docker builds and the judges' verdict tool beside them).

Adding an engine (e.g. Microsoft Agent Framework, a folder with `workflow.py`, run in its own venv):
1. Implement `protocol.Engine` in `stages/engine/<name>/adapter.py`:
   - `detect(flow, prompt)` -> `(FlowKind, file)` or None, from the folder's files alone (add the kind to
     `kinds.FlowKind`); `interface(kind, file)` -> `FlowInterface` (inputs/outputs, read from files);
   - `configure(runtime)` once per process (the engine's home under .llmops/), `prepare_worker()` in spawned
     row workers;
   - `environment(bindings)` -> env vars set while the flow loads and runs: the LLM binding for the engine's own
     clients (`binding.llm_environment(bindings[0].connection)` points OpenAI/Azure OpenAI clients at the stage's
     LLM proxy, which caches, retries and counts every request);
   - `load(kind, file, flow, bindings, options)` -> a `protocol.LoadedFlow`: `line(row_id, inputs)` returns
     `(outputs, aggregation_inputs)` or an awaitable of it (async engines; the runtime awaits it on the row's
     thread), raises to fail the row (`runtime.RowFailed` for a message as is); `aggregate(...)` for flow-level
     metrics; `node_variants` ({} unless DAG-like);
   - `row_of_request(headers)`: the row id an LLM request carries (tag requests per row, e.g. a header the
     engine's client sends), so the proxy attributes requests, tokens and cache hits to rows.
2. Register it in `registry.ENGINES` before prompt flow (the fallback, whose error names what a folder may hold).
An engine whose library cannot share this venv runs its rows in worker processes of its own interpreter behind
`line` (the runtime's threads give it concurrency; its row timeouts still apply).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "kinds": ("FlowError", "FlowInterface", "FlowKind"),
    "binding": (
        "LLMBinding",
        "NodeVariantError",
        "all_llm_bindings",
        "binding_for",
        "is_connection_input",
        "llm_environment",
        "model_config_kind",
        "model_input",
        "python_connections",
        "select_node_variants",
    ),
    "requirements": (
        "RequirementsError",
        "check_requirements",
        "check_requirements_file",
        "renamed_packages",
        "requirements_file",
        "unmet_requirements",
    ),
    "runtime": ("RowResult", "in_input_order"),
    "staging": ("original_paths", "run_copy"),
    "session": ("AggregationError", "FlowSession", "configure"),
    "registry": ("declares_model_config", "detect", "interface", "row_of_request"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'stages.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stages.engine.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(_WHERE)
