"""Redaction of known secrets (stages/core/redaction.py): log records, tracebacks, standard streams, files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from stages.core import io, redaction

KEY = "sk-canary-redaction-7c41e0"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEY registered, in this test only (the registry is process-wide)."""
    monkeypatch.setattr(redaction, "_secrets", ())
    redaction.register(KEY)


def test_every_registered_value_is_masked_whole(secrets: None) -> None:
    redaction.register(KEY[:12], "abc", "", None)  # a prefix of KEY; too short and empty values are ignored
    assert redaction.secrets() == (KEY, KEY[:12])  # longest first: KEY is masked whole, not as *** + its tail
    assert redaction.redact(f"Incorrect API key provided: {KEY}. abc") == "Incorrect API key provided: ***. abc"
    assert redaction.redact(f"{KEY[:12]}!") == "***!"
    assert redaction.redact_bytes(f'{{"error": "{KEY}"}}'.encode()) == b'{"error": "***"}'


def test_a_record_is_redacted_in_its_message_arguments_traceback_and_extras(secrets: None) -> None:
    try:
        raise RuntimeError(f"Incorrect API key provided: {KEY}")
    except RuntimeError as exc:
        error, record = exc, logging.LogRecord("execution", logging.ERROR, __file__, 1, "failed: %s", (KEY,),
                                               sys.exc_info())  # fmt: skip
    record.customer_content = error  # prompt flow's formatter writes this field's traceback into the line
    record.note = f"key {KEY}"
    redaction.redact_record(record)
    text = logging.Formatter("%(message)s %(note)s").format(record)
    assert "failed: ***" in text and "Incorrect API key provided: ***" in text and "Traceback" in text
    assert KEY not in text + record.customer_content


def test_files_written_through_io_are_redacted(secrets: None, tmp_path: Path) -> None:
    io.write_text(tmp_path / "a.txt", f"key={KEY}")
    io.write_json(tmp_path / "b.json", {"error": f"Incorrect API key provided: {KEY}"})
    io.write_jsonl(tmp_path / "c.jsonl", [{"error": KEY}, {"ok": 1}])
    texts = [path.read_text() for path in sorted(tmp_path.iterdir())]
    assert KEY not in "".join(texts)
    assert texts[0] == "key=***" and json.loads(texts[2].splitlines()[0]) == {"error": "***"}


def test_private_logs_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "blue.log"
    log.parent.mkdir()
    log.write_text("before\n")
    log.chmod(0o644)  # a log an earlier version left world-readable
    with io.open_log(log) as out:
        out.write(b"after\n")
    assert log.stat().st_mode & 0o777 == 0o600 and log.read_text() == "before\nafter\n"


# Everything a process writes once redaction is installed: its own logger and one made like prompt flow's
# (logging.Logger(name) with a StreamHandler holding the stream of that moment, which the manager never sees),
# a logger made before install (its handler gets the filter), an exception logged with its traceback, a print,
# a warning and an uncaught exception.
PROGRAM = f"""
import logging, sys, warnings
from stages.core import redaction

early = logging.getLogger("early")
early_handler = logging.StreamHandler(sys.stderr)
early.addHandler(early_handler)
redaction.install()
redaction.register({KEY!r})
pf_like = logging.Logger("execution")
pf_like.addHandler(logging.StreamHandler(sys.stdout))
early.warning("early logger: %s", {KEY!r})
pf_like.warning("Incorrect API key provided: {KEY}")
try:
    raise ValueError("Incorrect API key provided: {KEY}")
except ValueError:
    pf_like.exception("node failed")
    logging.getLogger("stages").error("with args %s", {KEY!r}, exc_info=True)
print("print:", {KEY!r})
warnings.warn("warning {KEY}")
assert early_handler.filters == [redaction._filter]
raise RuntimeError("uncaught {KEY}")
"""


def test_an_installed_process_writes_no_key_to_its_streams() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "RuntimeError: uncaught ***" in result.stderr
    assert output.count("Traceback") == 3 and output.count("Incorrect API key provided: ***") == 3
    assert "early logger: ***" in output and "print: ***" in output and "warning ***" in output
    assert KEY not in output
