"""What the LLM proxy translates so that code written for other OpenAI APIs reaches the run's endpoint.

1. The Responses API (`POST <base>/responses`, and Azure's `<endpoint>/openai/v1/responses`: what MAF's
   `OpenAIChatClient` calls) becomes a chat completion request: `instructions` a system message, each `input`
   message a message of its role with its text parts joined, `max_output_tokens` -> `max_tokens`, `temperature`,
   `top_p`, `user`, `metadata`-free. Text only: a request with tools, tool outputs, images or files, or
   `previous_response_id`, is refused (400, naming the field), never half-translated. The chat answer is turned
   back into a Responses answer (`output` holds one assistant message with its text; `usage` input/output tokens).
2. For a completion-only endpoint (a base model such as the embedded Gemma: `api: completion` in conf/llm), a
   chat completion request becomes a completion request, as prompt flow renders a chat prompt for the completion
   API: a lone user message is the prompt as it is (so a prompt rendered as one user message asks exactly what a
   completion node asks); otherwise each message is a `<role>:` line followed by its text, messages separated by
   a blank line, ending with `assistant:` for the answer, and `\nuser:` is added to the stop sequences (the model
   would otherwise write the next turn). `max_completion_tokens` -> `max_tokens`; temperature, top_p, stop, seed,
   penalties, n and user are kept. The completion answer is turned back into a chat answer (`message.content`).

Both run before the proxy computes the cache key, so the key is the request the endpoint really gets, and a hit
is translated back exactly as a miss.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

_RESPONSES_ROUTE = re.compile(r"^(?P<base>.*?)(?:/openai/v1)?/responses$")
_CHAT_ROUTE = re.compile(r"^(?P<base>.*?)/chat/completions$")
_KEPT_FOR_COMPLETION = ("model", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
                        "n", "user", "max_tokens", "logit_bias")  # fmt: skip
_RESPONSES_UNSUPPORTED = ("tools", "previous_response_id", "conversation", "prompt", "background")

Back = Callable[[dict[str, Any]], dict[str, Any]]  # turns the endpoint's answer back into the client's


class BridgeError(ValueError):
    """A request the bridge cannot translate faithfully; the proxy answers it with a 400 naming why."""


def responses_route(route: str) -> str | None:
    """The chat completions route for a Responses API route (None when `route` is not one)."""
    match = _RESPONSES_ROUTE.match(route)
    if not match or route.endswith("/chat/completions"):
        return None
    return match["base"] + "/chat/completions"


def _text_parts(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text"):
            raise BridgeError(f"{where}: content of type {kind!r} (the bridge to chat completions carries text only)")
        texts.append(str(part.get("text") or ""))
    return "".join(texts)


def responses_to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """A Responses API request as a chat completion request (see the module's docstring)."""
    for name in _RESPONSES_UNSUPPORTED:
        if request.get(name):
            raise BridgeError(f"the Responses API request sets {name!r}, which the bridge to chat completions lacks")
    messages: list[dict[str, str]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": str(request["instructions"])})
    items = request.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    for index, item in enumerate(items or []):
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise BridgeError(f"input[{index}] is a {kind!r} item; the bridge carries messages only")
        role = "system" if item.get("role") == "developer" else str(item.get("role") or "user")
        messages.append({"role": role, "content": _text_parts(item.get("content"), f"input[{index}]")})
    chat: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    if request.get("max_output_tokens") is not None:
        chat["max_tokens"] = request["max_output_tokens"]
    for name in ("temperature", "top_p", "user"):
        if request.get(name) is not None:
            chat[name] = request[name]
    return chat


def chat_to_responses(answer: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion answer as the Responses API answer to `request`."""
    choice = (answer.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = answer.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    incomplete = choice.get("finish_reason") == "length"
    ident = str(answer.get("id") or "bridge")
    return {
        "id": f"resp_{ident}", "object": "response", "created_at": answer.get("created") or int(time.time()),
        "model": answer.get("model") or request.get("model"),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": [{"type": "message", "id": f"msg_{ident}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
    }  # fmt: skip


def render_messages(messages: list[dict[str, Any]]) -> str:
    """The completion prompt of chat messages (see the module's docstring)."""
    texts = [(str(m.get("role") or "user"), _text_parts(m.get("content"), "message")) for m in messages]
    if len(texts) == 1 and texts[0][0] == "user":
        return texts[0][1]
    return "\n\n".join(f"{role}:\n{text}" for role, text in texts) + "\n\nassistant:\n"


def chat_to_completion(request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion request as a completion request (see the module's docstring)."""
    if request.get("tools") or request.get("functions"):
        raise BridgeError("the chat request has tools, which a completion-only endpoint cannot call")
    messages = list(request.get("messages") or [])
    if not messages:
        raise BridgeError("the chat request has no messages")
    completion = {name: request[name] for name in _KEPT_FOR_COMPLETION if name in request}
    if request.get("max_completion_tokens") is not None and completion.get("max_tokens") is None:
        completion["max_tokens"] = request["max_completion_tokens"]
    completion["prompt"] = render_messages(messages)
    if not (len(messages) == 1 and messages[0].get("role") == "user"):
        stop = completion.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        completion["stop"] = [*stops, "\nuser:"] if "\nuser:" not in stops else stops
    return completion


def completion_to_chat(answer: dict[str, Any]) -> dict[str, Any]:
    """A completion answer as a chat completion answer."""
    choices = [
        {"index": choice.get("index", index), "finish_reason": choice.get("finish_reason"),
         "message": {"role": "assistant", "content": choice.get("text") or ""}}
        for index, choice in enumerate(answer.get("choices") or [])
    ]  # fmt: skip
    return {**{k: v for k, v in answer.items() if k != "choices"}, "object": "chat.completion", "choices": choices}


def translate(route: str, request: dict[str, Any], completion_only: bool) -> tuple[str, dict[str, Any], list[Back]]:
    """The route and request to send for a client's `route` and `request`, and the functions (in order) that turn
    the endpoint's answer back into the client's. Nothing to translate: the same objects and no functions."""
    backs: list[Back] = []
    if (chat_route := responses_route(route)) is not None:
        original = request
        route, request = chat_route, responses_to_chat(request)
        backs.insert(0, lambda answer: chat_to_responses(answer, original))
    if completion_only and (match := _CHAT_ROUTE.match(route)):
        route, request = match["base"] + "/completions", chat_to_completion(request)
        backs.insert(0, completion_to_chat)
    return route, request, backs
