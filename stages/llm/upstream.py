"""What the LLM proxy sends upstream and how it reads the answers: the retry policy (429, 408, 5xx, timeouts;
exponential backoff with full jitter, Retry-After), requests an endpoint rejects as invalid, the adaptation of a
request to the endpoint (model, OpenAI/Azure OpenAI path layouts, null parameters), and the hints errors carry."""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RETRIABLE_STATUS = frozenset({408, 429, *range(500, 600)})
TRANSIENT_5XX = frozenset({502, 503, 504})  # gateways and overload: retried whatever the answer says
# An endpoint's answer that rejects one request for its content (400: a prompt longer than the model's context, as
# llama.cpp and OpenAI answer it; 413: too large; 422: unprocessable): not retried, an error of that row only.
REJECTED_STATUS = frozenset({400, 413, 422})
# An error message that says the request itself is wrong: the same request fails the same way every time.
# llama.cpp answers a null presence_penalty with 500 "argument 4: TypeError: wrong type".
_INVALID_REQUEST = re.compile(
    r"TypeError|ValueError|ArgumentError|wrong type|\binvalid\b|(?:not|be) a valid|validation error|unexpected keyword|"
    r"missing required|must be (?:a|an|of|greater|less|between)",
    re.IGNORECASE,
)
_AZURE_ROUTE = re.compile(r"^(?P<base>.*?)/openai/deployments/(?P<deployment>[^/]+)(?P<operation>/[^?]*)(?:\?.*)?$")
_OPERATIONS = ("/chat/completions", "/completions", "/embeddings")
# One JSON object, in llama.cpp's GBNF: llama.cpp's own grammars/json.gbnf (MIT), as llama-cpp-python ships it.
JSON_GRAMMAR = r"""root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"""


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` requests; before attempt n+1 wait Retry-After, or a uniform draw in
    [0, min(max_s, base_s * 2**n)] (full jitter). A Retry-After above `max_s` ends the retries at once."""

    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0

    @classmethod
    def from_params(cls, block: Mapping[str, Any] | None) -> RetryPolicy:
        policy = cls(**(block or {}))
        if policy.attempts < 1 or policy.base_s < 0 or policy.max_s < 0:
            raise ValueError(f"llm.retry: attempts must be >= 1 and delays >= 0, got {dict(block or {})}")
        return policy

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_s, self.base_s * 2**retry))


def error_message(body: bytes) -> str:
    """The message of an endpoint's error answer: `error.message` (OpenAI), `message` or `detail`, else the text."""
    text = body[:2000].decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if parsed.get(key):
                return str(parsed[key])
    return text.strip()


def rejects_request(status: int, body: bytes) -> bool:
    """Whether a 5xx answer says the request itself is invalid (a wrong type, an invalid parameter): deterministic,
    so retrying it only multiplies the failure. 502/503/504 are always transient."""
    if status < 500 or status in TRANSIENT_5XX:
        return False
    return bool(_INVALID_REQUEST.search(error_message(body)))


@dataclass(frozen=True)
class RequestAdapter:
    """What the proxy changes in a request before its key is computed, for the endpoint it forwards to.

    `layout` is the endpoint's path layout (None: paths and models are forwarded as they are): `openai`
    (`<base>/chat/completions`) or `azure_openai` (`<base>/openai/deployments/<deployment>/chat/completions?...`);
    a request in the other layout
    (a flow's own AzureOpenAI client against llama.cpp, or an OpenAI client against Azure) is translated, with
    `model` as the deployment and `api_version` added. On the OpenAI layout, completion and chat requests are sent
    to `model` (the connection's: a flow's hard-coded model name does not bypass the run's LLM). With
    `drop_null_params`, top-level null parameters are removed (in the OpenAI API null means "not given"). With
    `default_max_tokens`, a completion or chat request that sets no max_tokens (nor max_completion_tokens) gets
    that many, before the cache key is computed (the bound changes the answer). With `json_answers` (an evaluation
    flow that parses its judge's answer as JSON), a chat request without a response_format asks for a JSON object,
    and so does a completion request without a grammar on an endpoint that takes one (`json_grammar`: llama.cpp).
    """

    layout: str | None = None  # None: forward paths as they are
    model: str | None = None
    api_version: str | None = None
    drop_null_params: bool = False
    default_max_tokens: int | None = None
    completion_only: bool = False  # chat requests are bridged to the completion API (stages/llm/chat_bridge.py)
    json_answers: bool = False
    json_grammar: bool = False

    def adapt(self, path: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path (with query) and body for the endpoint's layout and model; the same objects when nothing
        changes. Null parameters are kept here (the cache key has them): `without_nulls` drops them for sending."""
        route, _, query = path.partition("?")
        azure = _AZURE_ROUTE.match(path)
        if self.layout == "openai" and azure:
            route, query = azure["base"] + azure["operation"], ""
        elif self.layout == "azure_openai" and not azure and self.model:
            operation = next((op for op in _OPERATIONS if route.endswith(op)), None)
            if operation:
                base = route[: -len(operation)]
                route = f"{base}/openai/deployments/{self.model}{operation}"
                query = query or (f"api-version={self.api_version}" if self.api_version else "")
        to_model = self.layout == "openai" and self.model and route.endswith("/completions")
        if to_model and request.get("model") != self.model:
            request = {**request, "model": self.model}
        unbounded = request.get("max_tokens") is None and request.get("max_completion_tokens") is None
        if self.default_max_tokens and unbounded and route.endswith("/completions"):
            request = {**request, "max_tokens": self.default_max_tokens}
        if self.json_answers and route.endswith("/chat/completions") and not request.get("response_format"):
            request = {**request, "response_format": {"type": "json_object"}}
        elif self.json_answers and self.json_grammar and route.endswith("/completions") and not request.get("grammar"):
            request = {**request, "grammar": JSON_GRAMMAR}
        adapted = route + (f"?{query}" if query else "")
        return (path if adapted == path else adapted), request

    def headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The key header the endpoint reads: an OpenAI client's `Authorization: Bearer <key>` also as Azure
        OpenAI's `api-key`, and the other way round (headers are never part of the cache key)."""
        names = {name.lower(): name for name in headers}
        if self.layout == "azure_openai" and "api-key" not in names and "authorization" in names:
            value = headers[names["authorization"]]
            if value.lower().startswith("bearer "):
                return {**headers, "api-key": value[7:]}
        if self.layout == "openai" and "authorization" not in names and "api-key" in names:
            return {**headers, "Authorization": f"Bearer {headers[names['api-key']]}"}
        return headers

    def without_nulls(self, request: dict[str, Any]) -> dict[str, Any]:
        """The body to send: without its top-level null parameters when `drop_null_params` (else `request`)."""
        if self.drop_null_params and any(value is None for value in request.values()):
            return {name: value for name, value in request.items() if value is not None}
        return request


def null_params_hint(request: Mapping[str, Any] | None) -> str:
    """What to do about a rejected request that sends null parameters ("" when it sends none)."""
    nulls = sorted(name for name, value in (request or {}).items() if value is None)
    if not nulls:
        return ""
    return (
        f" The request sends null for {', '.join(nulls)}: this endpoint does not accept null parameters (llama.cpp "
        "does not); set `drop_null_params: true` in the connection (conf/llm/<name>.yaml), or give the flow's LLM "
        "node these inputs."
    )


def timeout_hint(request: Mapping[str, Any] | None, timeout_s: float) -> str:
    """What to do about requests that timed out: the endpoint took longer than `request_timeout_s` to answer."""
    asked = (request or {}).get("max_tokens") or (request or {}).get("max_completion_tokens")
    size = f"; the request asks for up to {asked} tokens" if asked else "; the request sets no max_tokens"
    return (
        f" Each attempt waited request_timeout_s ({timeout_s:g} s){size}. An endpoint that serves one request at a "
        "time (llama.cpp) goes on generating an abandoned answer, so a retry waits behind it: on a slow or busy "
        "machine, raise request_timeout_s (conf/llm/<name>.yaml, or `llmops params llm.request_timeout_s=240 "
        "judge.request_timeout_s=240`), or bound the answer (max_tokens, default_max_tokens)."
    )


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: back off as if there were none
