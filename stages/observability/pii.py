"""PII redaction: personal data is replaced by a typed placeholder (`<EMAIL>`, `<PHONE>`...) before anything is
written (production logs, traces, files).

The detector is a set of tested patterns (e-mail, card numbers checked with Luhn, IBANs checked with their mod-97
checksum, IPv4/IPv6 addresses, phone numbers, and names introduced by a title or a phrase such as "my name is").
Presidio was measured here (see docs/observability.md): its analyzer needs a spaCy model for names and the
models are not installable offline from the registries this project uses, so the patterns are the detector;
`Redactor` keeps one entry point (`redact_text`, `redact_value`) so a stronger detector can be plugged in.
Which kinds are redacted is configurable per deployment (`conf/deploy/<env>.yaml`: `pii.redact`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("email", "card", "iban", "ip", "phone", "name")

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")  # checked by ipaddress
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)")
# A capitalised name (one to three words) after a title or an introducing phrase.
_NAME = re.compile(
    r"(?P<lead>\b(?:Mr|Mrs|Ms|Miss|Dr|Prof|Sir|Madam)\.?\s+|\b(?:[Mm]y name is|I am|I'm|[Nn]ame:|[Cc]ontact|"
    r"[Ss]igned|[Rr]egards,|[Dd]ear)\s+)(?P<name>[A-Z][a-z'\-]+(?:\s+[A-Z][a-z'\-]+){0,2})"
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 checksum of an IBAN (spaces allowed)."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ip(match: re.Match[str]) -> bool:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return False
    return True


def _phone(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 7 <= len(digits) <= 15


# Order matters: a card number or an IBAN would otherwise be read as a phone number.
_RULES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool] | None], ...] = (
    ("email", _EMAIL, None),
    ("iban", _IBAN, lambda m: iban_ok(m.group())),
    ("card", _CARD, _card),
    ("ip", _IPV4, _ip),
    ("ip", _IPV6, _ip),
    ("phone", _PHONE, _phone),
)


@dataclass(frozen=True)
class Redactor:
    """Replaces the configured kinds of personal data with `<KIND>`; `enabled` False passes text unchanged."""

    kinds: frozenset[str] = frozenset(KINDS)
    enabled: bool = True

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "pii") -> Redactor:
        """From a deployment's `pii` block: `{enabled: bool, redact: [kinds]}` (absent: everything redacted)."""
        block = dict(block or {})
        unknown = set(block) - {"enabled", "redact"}
        if unknown:
            raise ValueError(f"{where}: unknown key {', '.join(sorted(unknown))} (enabled, redact)")
        kinds = block.get("redact", list(KINDS))
        if not isinstance(kinds, list) or not set(kinds) <= set(KINDS):
            raise ValueError(f"{where}.redact: a list of {', '.join(KINDS)}, got {kinds!r}")
        return cls(frozenset(kinds), bool(block.get("enabled", True)))

    def redact_text(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        if "name" in self.kinds:
            text = _NAME.sub(lambda m: f"{m['lead']}<NAME>", text)
        for kind, pattern, check in _RULES:
            if kind in self.kinds:
                text = pattern.sub(lambda m, k=kind, c=check: m.group() if c and not c(m) else f"<{k.upper()}>", text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Parsed JSON with every string (keys too) redacted."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {self.redact_text(str(k)): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(item) for item in value]
        return value

    def found(self, text: str) -> list[str]:
        """The kinds of personal data in `text` (for tests and the canary)."""
        return sorted({kind for kind in KINDS if self._only(kind).redact_text(text) != text})

    def _only(self, kind: str) -> Redactor:
        return Redactor(frozenset({kind}), True)


DEFAULT = Redactor()
