"""Prompt flow's private hooks, all in one place: what this toolkit patches in prompt flow, promptflow-tools, httpx
and tiktoken, and the private prompt flow names it relies on. Each hook says why; each is idempotent.

- Row tagging: the row id rides in the tracking header prompt flow's OpenAI instrumentation adds to every LLM
  request (its private OperationContext keys), so the LLM proxy can attribute requests to rows.
- One TLS context, one OpenAI client per connection, one compiled template per prompt, per process (CPU).
- Requests to an LLM proxy of this process are answered by calling it, not over HTTP (CPU).
- Token metrics: prompt flow adds up only the counts of an LLM call's usage (openai 1.x's usage has nested fields).
- One span per LLM call: the LLM proxy's; prompt flow's OpenAI instrumentation only adds the tracking header (CPU).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from stages.engine.runtime import RowFailed


def raise_unless_completed(result: Any) -> None:
    """A line result prompt flow did not complete becomes the row's error."""
    run_info = result.run_info
    if getattr(run_info.status, "value", str(run_info.status)) != "Completed":
        raise RowFailed((run_info.error or {}).get("message") or f"flow ended with status {run_info.status}")


# Prompt flow's OpenAI instrumentation adds this header to every LLM request, holding the tracked keys of the
# operation context (a context variable). The row id rides in it, so that the LLM proxy can attribute requests
# to rows; it is never part of a cache key.
_TRACKING_HEADER = "ms-azure-ai-promptflow"
_ROW_KEY = "llmops_row_id"


def row_of_request(headers: Mapping[str, str]) -> str | None:
    """The row id an LLM request made by a prompt flow row carries in its headers (None if it has none)."""
    value = next((v for name, v in headers.items() if name.lower() == _TRACKING_HEADER), None)
    try:
        info = json.loads(value) if value else None
    except ValueError:
        return None
    row = info.get(_ROW_KEY) if isinstance(info, dict) else None
    return row if isinstance(row, str) else None


def tag_row(row_id: str) -> None:
    """Put the row id in this context's prompt flow operation context, among the keys its LLM requests carry."""
    from promptflow._internal import OperationContext

    context = OperationContext.get_instance().copy()
    keys = context.get(OperationContext._TRACKING_KEYS) or context.get(OperationContext._DEFAULT_TRACING_KEYS) or ()
    context[OperationContext._TRACKING_KEYS] = {*keys, _ROW_KEY}
    context[_ROW_KEY] = row_id
    OperationContext.set_instance(context)


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
    from stages.llm import llm_proxy

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


def _sum_token_counts_only() -> None:
    """Let prompt flow add up the token counts of an LLM call's usage, and leave out what is not a count.

    openai 1.x's usage carries `prompt_tokens_details` and `completion_tokens_details` (None, or an object).
    Prompt flow's metrics calculator adds every value of the usage, so it fails on `0 + None` for each LLM call:
    a WARNING "Failed to calculate metrics ..." per row in the stage's log (from any OpenAI-compatible server) and
    no token metrics in the row's run info. Counts are added up; the rest is skipped.
    """
    try:
        from promptflow.tracing._openai_utils import OpenAIMetricsCalculator
    except ImportError:
        return
    if getattr(OpenAIMetricsCalculator.merge_metrics_dict, "llmops_counts_only", False):
        return

    def merge_metrics_dict(self: Any, metrics: dict, metrics_to_merge: dict) -> None:
        for key, value in metrics_to_merge.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[key] = metrics.get(key, 0) + value

    merge_metrics_dict.llmops_counts_only = True  # type: ignore[attr-defined]
    OpenAIMetricsCalculator.merge_metrics_dict = merge_metrics_dict  # type: ignore[method-assign]


def _trace_llm_calls_once() -> None:
    """Keep prompt flow's OpenAI instrumentation to the tracking header (row tagging, above), without its span.

    With tracing on, it also makes a span per OpenAI call, holding the call's arguments and the whole response as
    JSON: the LLM proxy's GenAI span is that call's span already (model, prompt, completion, tokens, latency,
    cache, retries; stages/observability/tracing.py), and serializing it all again was about a quarter of a traced
    run stage's CPU (web_classification, 72 rows from the LLM cache: 2.0 -> 1.5 CPU-s, the same outputs). Methods
    wrapped before this hook are unwrapped and wrapped again, header only.
    """
    from promptflow.tracing._integrations import _openai_injector as injector

    if getattr(injector.inject_function_sync, "llmops_untraced", False):
        return

    def untraced(*_args: Any, **_kwargs: Any) -> Any:
        return lambda function: function

    untraced.llmops_untraced = True  # type: ignore[attr-defined]
    injector.inject_function_sync = injector.inject_function_async = untraced
    injector.recover_openai_api()


def install() -> None:
    """Every hook of this module (the tracking header on prompty flows' requests too: see row_of_request)."""
    from promptflow._internal import inject_openai_api

    _trace_llm_calls_once()
    inject_openai_api()
    _share_default_tls_context()
    _share_openai_clients()
    _cache_prompt_templates()
    _sum_token_counts_only()
