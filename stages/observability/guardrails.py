"""Input guardrails at the endpoint: what a request must pass before the flow sees it.

Checked in order, each refusal a clear 4xx naming the check (the deployment counts every outcome, see `Counts`):
1. size: every string input at most `max_input_chars` characters (413); the body's byte limit is the server's;
2. schema: a JSON object with exactly the flow's declared inputs, the required ones present, strings where the
   flow declares strings (400);
3. prompt injection: patterns of the known attacks ("ignore previous instructions", "reveal your system prompt",
   role-play jailbreaks...); action `block` (422), `flag` (passed on, counted and marked) or `pass`;
4. a content filter hook: `content_filter: "package.module:function"`, called with the inputs, returning
   `block`, `flag` or `pass` (or a tuple of the action and a reason): an Azure AI Content Safety call, a
   moderation model, a word list.
Configured per deployment in `conf/deploy/<env>.yaml` (`guardrails:`).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("block", "flag", "pass")
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|your|the)\b[^.\n]{0,20}"
    r"\b(?:instructions?|prompts?|rules|directions)\b"
    r"|\b(?:reveal|print|show|repeat|output|leak)\b[^.\n]{0,30}\b(?:system|hidden|initial|original)\s+(?:prompt|"
    r"instructions?|message)"
    r"|\byou are now\b|\bpretend (?:to be|you are)\b|\bact as (?:an? )?(?:unfiltered|unrestricted|jailbroken)\b"
    r"|\bdeveloper mode\b|\bDAN\b|\bjailbreak\b|<\|im_start\|>|\[/?INST\]|^\s*(?:system|assistant)\s*:",
    re.IGNORECASE | re.MULTILINE,
)


class GuardrailConfigError(ValueError):
    """A guardrails block that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Verdict:
    """What the guardrails decided: `status` 200 to go on (with `flags`), else the 4xx and its reason."""

    status: int = 200
    check: str = "passed"
    reason: str = ""
    flags: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.status == 200


def injection_match(text: str) -> str | None:
    """The first prompt-injection pattern found in `text` (None: none)."""
    match = _INJECTION.search(text)
    return match.group().strip() if match else None


ContentFilter = Callable[[Mapping[str, Any]], Any]


def load_filter(reference: str, where: str) -> ContentFilter:
    """The function `package.module:function` names."""
    module, _, name = reference.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GuardrailConfigError(f"{where}.content_filter: cannot load {reference!r} ({exc})") from None
    if not callable(function):
        raise GuardrailConfigError(f"{where}.content_filter: {reference!r} is not a function")
    return function


@dataclass(frozen=True)
class Guardrails:
    max_input_chars: int = 32000
    prompt_injection: str = "block"
    content_filter: ContentFilter | None = None

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "guardrails") -> Guardrails:
        block = dict(block or {})
        if unknown := set(block) - {"max_input_chars", "prompt_injection", "content_filter"}:
            raise GuardrailConfigError(f"{where}: unknown key {', '.join(sorted(unknown))}")
        size = block.get("max_input_chars", 32000)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise GuardrailConfigError(f"{where}.max_input_chars: a whole number >= 1, got {size!r}")
        action = block.get("prompt_injection", "block")
        if action not in ACTIONS:
            raise GuardrailConfigError(f"{where}.prompt_injection: one of {', '.join(ACTIONS)}, got {action!r}")
        reference = block.get("content_filter")
        return cls(size, action, load_filter(str(reference), where) if reference else None)

    def check(self, body: Any, declared: Mapping[str, Any], required: set[str],
              types: Mapping[str, str] | None = None) -> Verdict:  # fmt: skip
        """The verdict on a request body against the flow's declared inputs (`types`: input -> declared type)."""
        if not isinstance(body, dict):
            return Verdict(400, "schema", f"the request body must be a JSON object of the flow's inputs "
                                          f"({', '.join(declared)})")  # fmt: skip
        if missing := sorted(required - set(body)):
            return Verdict(400, "schema", f"missing input {', '.join(missing)} (the flow takes {', '.join(declared)})")
        if unknown := sorted(set(body) - set(declared)):
            return Verdict(400, "schema", f"unknown input {', '.join(unknown)} (the flow takes {', '.join(declared)})")
        for name, kind in (types or {}).items():
            if kind == "string" and name in body and not isinstance(body[name], str):
                return Verdict(400, "schema", f"input {name} must be a string, got {type(body[name]).__name__}")
        texts = {name: value for name, value in body.items() if isinstance(value, str)}
        for name, value in texts.items():
            if len(value) > self.max_input_chars:
                return Verdict(413, "size", f"input {name} has {len(value)} characters; the limit is "
                                            f"{self.max_input_chars} (guardrails.max_input_chars)")  # fmt: skip
        flags: list[str] = []
        if self.prompt_injection != "pass":
            for name, value in texts.items():
                if found := injection_match(value):
                    if self.prompt_injection == "block":
                        reason = (
                            f"input {name} looks like a prompt injection ({found[:60]!r}); refused by the guardrails"
                        )
                        return Verdict(422, "prompt_injection", reason)
                    flags.append("prompt_injection")
                    break
        if self.content_filter is not None:
            outcome = self.content_filter(body)
            action, reason = outcome if isinstance(outcome, tuple) else (outcome, "")
            if action not in ACTIONS:
                return Verdict(500, "content_filter", f"the content filter answered {action!r}, not block/flag/pass")
            if action == "block":
                return Verdict(422, "content_filter", f"refused by the content filter{f': {reason}' if reason else ''}")
            if action == "flag":
                flags.append("content_filter")
        return Verdict(flags=tuple(flags))


@dataclass
class Counts:
    """Guardrail outcomes since the deployment started: served on /health and as OTel metrics."""

    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, verdict: Verdict) -> None:
        keys = [verdict.check if not verdict.allowed else "passed", *(f"flagged_{flag}" for flag in verdict.flags)]
        with self._lock:
            for key in keys:
                self.counts[key] = self.counts.get(key, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
