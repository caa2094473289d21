"""The prompt flow engine (`protocol.Engine`): DAG, flex and prompty flows, run in-process row by row through
prompt flow's executor: no run records, no connection database, no keyring. Connections are built in memory from
`connections.Connection` and never persisted. Prompt flow is imported only when a flow loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from stages.core import redaction
from stages.engine import binding as wiring
from stages.engine.binding import LLMBinding
from stages.engine.kinds import FlowError, FlowInterface, FlowKind
from stages.engine.promptflow import environment, hooks
from stages.engine.protocol import LoadedFlow, LoadOptions
from stages.engine.runtime import watch_logger


class PromptFlowEngine:
    name = "promptflow"

    def detect(self, flow: Path, prompt: str | None) -> tuple[FlowKind, Path] | None:
        """A flow.dag.yaml, a flow.flex.yaml, or a .prompty file (the one `prompt` names, or the folder's only one).
        The fallback engine: a folder that is none of these raises FlowError naming what it holds."""
        if flow.is_file() and flow.suffix == ".prompty":
            return FlowKind.PROMPTY, flow
        if (flow / "flow.dag.yaml").is_file():
            return FlowKind.DAG, flow / "flow.dag.yaml"
        if (flow / "flow.flex.yaml").is_file():
            return FlowKind.FLEX, flow / "flow.flex.yaml"
        if prompt and prompt.endswith(".prompty"):
            if not (flow / prompt).is_file():
                raise FlowError(f"{flow / prompt}: prompt file not found")
            return FlowKind.PROMPTY, flow / prompt
        prompties = sorted(flow.glob("*.prompty"))
        if len(prompties) == 1:
            return FlowKind.PROMPTY, prompties[0]
        found = ", ".join(p.name for p in prompties) or "nothing"
        raise FlowError(
            f"{flow}: not a flow (expected flow.dag.yaml, flow.flex.yaml or exactly one .prompty file, found {found})"
        )

    def interface(self, kind: FlowKind, file: Path) -> FlowInterface:
        """From flow.dag.yaml, flow.flex.yaml or the .prompty front matter; a prompty's text answer is the output
        `output`."""
        from stages.core.yaml_reader import load_yaml

        text = file.read_text(encoding="utf-8")
        if kind is FlowKind.PROMPTY:
            text = text.split("---", 2)[1] if text.lstrip().startswith("---") else ""
        spec = load_yaml(text) or {}
        inputs = {
            str(name): ((decl or {}).get("type"), not isinstance(decl, Mapping) or "default" not in decl)
            for name, decl in (spec.get("inputs") or {}).items()
        }
        if kind is FlowKind.PROMPTY:
            return FlowInterface(inputs, {"output": None})
        outputs = {str(name): (decl or {}).get("type") for name, decl in (spec.get("outputs") or {}).items()}
        return FlowInterface(inputs, outputs)

    def configure(self, runtime: Path) -> None:
        environment.configure(runtime)

    def prepare_worker(self) -> None:
        environment.quiet_loggers()  # the environment configure() set is inherited, logger levels and patches are not
        environment.refuse_downloads()

    def environment(self, bindings: Sequence[LLMBinding]) -> dict[str, str]:
        """A flow's own OpenAI / Azure OpenAI clients (built from the environment) reach the same LLM."""
        return wiring.llm_environment(bindings[0].connection) if bindings else {}

    def load(self, kind: FlowKind, file: Path, flow: Path, bindings: Sequence[LLMBinding],
             options: LoadOptions) -> LoadedFlow:  # fmt: skip
        hooks.install()
        redaction.install(streams=False)  # prompt flow's loggers exist now: their handlers get the filter
        from promptflow._utils import logger_utils

        watch_logger(logger_utils.logger)  # what DAG nodes print to stderr, "[node in line N] stderr> ..."
        from stages.engine.promptflow import flows

        if kind is FlowKind.DAG:
            return flows.DagFlow(file, bindings, options.node_inputs, options.node_variants, options.row_timeout_s)
        binding = bindings[0] if bindings else None
        if kind is FlowKind.FLEX:
            return flows.FlexFlow(file, binding)
        return flows.PromptyFlow(file, binding)

    def row_of_request(self, headers: Mapping[str, str]) -> str | None:
        return hooks.row_of_request(headers)
