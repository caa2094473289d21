"""Redaction of known secrets: the one owner of the rule that a secret is written as `***`.

The secrets are the keys this process read (connections.resolve registers an LLM connection's key, the deploy
code the endpoint key): an LLM server or gateway may echo a key back in an error ("Incorrect API key provided:
sk-..."), and that text then travels through exceptions, prompt flow's logs and our own messages. `install()`
makes the process redact them wherever it writes text:
- every log record, at its creation (a log record factory: message and arguments, traceback, stack), and on
  every handler of the loggers that exist (a filter, which also sees the fields loggers add with `extra`, as
  prompt flow's `customer_content`);
- `sys.stdout` and `sys.stderr`: prints, uncaught tracebacks, and prompt flow's stream handlers, which keep the
  stream they found when prompt flow was imported (so install before importing it; engine.configure does);
- the files written through stages.core.io.
Worker processes and servers install it themselves (spawned processes inherit neither the streams nor the
registered secrets).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"
MIN_LENGTH = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret that contains another is masked whole


def register(*values: str | None) -> None:
    """Add secret values to redact from now on, in this process (empty and too short values are ignored)."""
    global _secrets
    new = {value for value in values if value and len(value) >= MIN_LENGTH}
    with _lock:
        if not new <= set(_secrets):
            _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))


def secrets() -> tuple[str, ...]:
    """The registered secrets (for handing to a worker process)."""
    return _secrets


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every registered secret (and every value of `extra`) replaced by ***."""
    for secret in (*_secrets, *extra):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    """`data` with every registered secret, UTF-8 encoded, replaced by ***."""
    for secret in _secrets:
        encoded = secret.encode("utf-8")
        if encoded in data:
            data = data.replace(encoded, MASK.encode())
    return data


def contains_secret(text: str) -> bool:
    return any(secret in text for secret in _secrets)


_STANDARD_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_traceback_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: its message (arguments merged in), traceback, stack and `extra` fields."""
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the message: logging reports it later, without the secret
        message = f"{record.msg!s} {record.args!r}"
    if contains_secret(message):
        record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _traceback_formatter.formatException(record.exc_info)
    if record.exc_text and contains_secret(record.exc_text):
        record.exc_text = redact(record.exc_text)
    if record.stack_info and contains_secret(record.stack_info):
        record.stack_info = redact(record.stack_info)
    for name, value in list(record.__dict__.items()):
        if name in _STANDARD_RECORD_FIELDS:
            continue
        if isinstance(value, BaseException):
            value = "".join(_traceback_formatter.formatException((type(value), value, value.__traceback__)))
            if contains_secret(value):
                record.__dict__[name] = redact(value)
        elif isinstance(value, str) and contains_secret(value):
            record.__dict__[name] = redact(value)
    return record


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record it passes (and drops none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class RedactingStream:
    """A text stream that redacts what is written to it before passing it on (other attributes delegate)."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(redact(text) if _secrets and isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


_installed = False
_filter = RedactingFilter()


def all_loggers() -> list[logging.Logger]:
    """Every logger of this process, prompt flow's unregistered execution loggers included."""
    loggers = [logging.getLogger()]
    loggers += [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    # Prompt flow makes its execution loggers with logging.Logger(name): the manager does not know them.
    if pf_logging := sys.modules.get("promptflow._utils.logger_utils"):
        loggers += [logger for logger in vars(pf_logging).values() if isinstance(logger, logging.Logger)]
        loggers += list(getattr(getattr(pf_logging, "LoggerFactory", None), "_existing_loggers", []))
    return loggers


def install(streams: bool = True) -> None:
    """Redact the registered secrets (also those registered later) in this process's log records and, with
    `streams`, in its sys.stdout and sys.stderr (a process's entry point asks for them; a library leaves them be).

    Idempotent; call it again after importing a library that makes its own loggers (its handlers get the filter).
    """
    global _installed
    with _lock:
        if not _installed:
            make_record = logging.getLogRecordFactory()
            logging.setLogRecordFactory(lambda *args, **kwargs: redact_record(make_record(*args, **kwargs)))
            _installed = True
        if streams and not isinstance(sys.stdout, RedactingStream) and sys.stdout is not None:
            sys.stdout = RedactingStream(sys.stdout)  # type: ignore[assignment]
        if streams and not isinstance(sys.stderr, RedactingStream) and sys.stderr is not None:
            sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
        for logger in all_loggers():
            for handler in logger.handlers:
                if _filter not in handler.filters:
                    handler.addFilter(_filter)
