"""The schema of a use case's config (conf/use_cases/<uc>.yaml, composed into params.yaml `use_cases.<uc>`).

Checked where params are composed (`llmops params`) and where a stage reads them (`project.load_params`), since
`dvc exp run` composes params.yaml itself: a misspelt or missing key is named with its conf file, e.g.
`conf/use_cases/web_classification.yaml: data.input: unknown key (did you mean 'inputs'?)`.
Free-form blocks (an LLM's `params`, `node_inputs`, `metrics`, `evaluate.mapping`) are checked by their readers.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from stages.core import variants


class ConfError(ValueError):
    """Composed params that do not fit the schema; the message names the conf file and key of each problem."""


def _either(description: str, *checks: typing.Callable[[Any], bool]) -> PlainValidator:
    """A value that passes one of `checks`, else one error saying what was expected (not one per union member)."""

    def validate(value: Any) -> Any:
        if not any(check(value) for check in checks):
            raise ValueError(f"expected {description}, got {value!r}")
        return value

    return PlainValidator(validate)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, str) and v for v in value.values())


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


Inputs = Annotated[Any, _either("a list of column names or a {flow input: column} mapping", _is_names, _is_str_map)]
Prompt = Annotated[Any, _either("a prompt file or {completion: file, chat: file}", _is_name, _is_str_map)]
NodeChoice = Annotated[Any, _either("a node variant id or null", _is_name, lambda v: v is None)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Data(_Block):
    inputs: Inputs  # dataset columns the flow takes (a list), or {flow input: column}
    inputs_by_env: dict[str, Inputs] | None = None  # per env ("default" too); `inputs` selects one (import)
    label: str  # the ground-truth column
    lists: list[str] = []  # inputs that hold a JSON list (e.g. a chat history)


class Variant(_Block):
    llm_node: str | None = None
    prompt: Prompt = None
    params: dict[str, Any] = {}
    node_inputs: dict[str, dict[str, Any]] = {}
    node_variants: dict[str, NodeChoice] = {}
    json_answers: bool = False  # the flow's LLM requests ask for a JSON answer (the flow parses it)


class Judge(_Block):
    rubric: str | None = None
    prompt: Prompt = None
    params: dict[str, Any] = {}


class Evaluate(_Block):
    mapping: dict[str, str]
    mapping_by_env: dict[str, dict[str, str]] | None = None  # per env ("default" too); `mapping` selects one
    judges: dict[str, Judge] = {}
    json_answers: bool = False  # the judge's requests ask for a JSON answer (the evaluation flow parses it)


class Report(_Block):  # the fields of stages.results.reporting.Columns that do not come from `data`
    prediction: str
    raw_answer: str
    correct: str
    confusion: bool = False
    details: list[str] = []


class Chunking(_Block):
    words: int
    overlap: int


class Documents(_Block):
    chunking: Chunking


class ParityBlock(_Block):  # stages/results/parity.py: this use case must behave as `against` on the same rows
    against: str
    margin: float = Field(default=0.02, gt=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)


class UseCase(_Block):
    dataset: str
    datasets: dict[str, str] | None = None  # a dataset per env; `dataset` picks one (`${.datasets[${env.name}]}`)
    flow: str
    eval_flow: str
    eval_flows: dict[str, str] | None = None  # an evaluation flow per env ("default" too); `eval_flow` selects one
    data: Data
    variant: str
    baseline: str | None = None
    node_variants: dict[str, NodeChoice] = {}
    variants: dict[str, Variant] = Field(min_length=1)
    metrics: dict[str, Any]
    evaluate: Evaluate
    report: Report
    documents: Documents | None = None
    parity: ParityBlock | None = None


class Prepare(_Block):
    max_row_bytes: int = Field(ge=1)


class Bulk(_Block):  # the run stage (every key) and the evaluate stage (row_timeout_s)
    row_timeout_s: float = Field(gt=0)
    max_error_rate: float = Field(ge=0, le=1)
    repeats: int = Field(default=1, ge=1)
    processes: int = Field(default=1, ge=1)


class LlmCache(_Block):
    enabled: bool
    keep_days: float = Field(ge=0)


class ReportSettings(_Block):  # the report stage's page
    chart_dpi: int = Field(ge=1)
    max_rows_in_html: int = Field(ge=0)


# conf/config.yaml's blocks the stages read, checked when present (a test's minimal params may leave one out).
SETTINGS: dict[str, type[_Block]] = {"prepare": Prepare, "bulk": Bulk, "llm_cache": LlmCache, "report": ReportSettings}


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The model class (or None) that the value at `loc` below `model` is checked against."""
    current = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        while typing.get_origin(current) in (Union, types.UnionType):  # X | None
            current = next(arg for arg in typing.get_args(current) if arg is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(model: type[BaseModel], error: Any, prefix: str) -> str:
    loc = tuple(error["loc"])
    key = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc))
    if error["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
        return f"{key}: unknown key ({hint})"
    if error["type"] == "missing":
        return f"{key}: missing (a required key)"
    if error["type"] in ("model_type", "dict_type"):
        return f"{key}: expected a mapping of keys, got {error['input']!r}"
    return f"{key}: {str(error['msg']).removeprefix('Value error, ')}"


def problems(model: type[BaseModel], block: Any, prefix: str = "") -> list[str]:
    """What is wrong with `block` against `model`, one line per key (none when it fits); keys below `prefix`."""
    try:
        model.model_validate(block)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")  # a typo's own key first
        return [_describe(model, error, prefix) for error in errors]
    return []


def check_params(params: Mapping[str, Any]) -> None:
    """Check the composed params' use cases and the stages' settings (`prepare`, `bulk`, `llm_cache`, `report`)
    against the schema, and that a variant a use case
    names itself is one it defines: a ConfError listing every problem, a line each, with its conf file and key."""
    found = [f"conf/config.yaml: {line}" for line in problems(Prepare, params.get("prepare"), "prepare")]
    for key, model in SETTINGS.items():
        if key != "prepare" and key in params:
            found += [f"conf/config.yaml: {line}" for line in problems(model, params[key], key)]
    for name, block in (params.get("use_cases") or {}).items():
        lines = [f"conf/use_cases/{name}.yaml: {line}" for line in problems(UseCase, block)]
        if not lines:
            try:
                variants.plan_for(params, name)
            except variants.VariantError as exc:
                lines.append(str(exc))
        found += lines
    if found:
        raise ConfError("\n".join(found))
