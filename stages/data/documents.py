"""Documents for retrieval (DataOps): markdown and PDF -> passages -> chunks, as pure functions over text.

A passage is the text of one PDF page or one markdown section; a chunk is a window of words over a whole
document, tagged with the page and section of its first word. The same small markdown reader renders the
project's source documents to PDF (fpdf2, byte-for-byte reproducible) and reads markdown documents back.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIXES = (".pdf", ".md")
# Fixed PDF metadata: the same source text always gives the same bytes (and the same DVC hash).
_PDF_DATE = datetime(2024, 1, 1, tzinfo=UTC)
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


class DocumentError(ValueError):
    """A document cannot be read, rendered or chunked; the message names the file (and line) or the setting."""


@dataclass(frozen=True)
class Block:
    """One markdown block: a heading (level 1-6) or a paragraph (level 0), with the section it belongs to."""

    level: int
    text: str
    section: str | None


@dataclass(frozen=True)
class Passage:
    doc: str  # the document's id: its file name without the suffix
    page: int | None  # 1-based PDF page (None for markdown)
    section: str | None  # the markdown section heading (None for PDF)
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    id: str  # <doc>#<n>: stable for the same documents and chunking settings
    doc: str
    page: int | None
    section: str | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_markdown(text: str) -> list[Block]:
    """Headings and paragraphs of a markdown text; a paragraph's lines (and list items) are joined by spaces."""
    blocks: list[Block] = []
    section: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if lines:
            blocks.append(Block(0, " ".join(lines), section))
            lines.clear()

    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            flush()
            section = heading.group(2).strip()
            blocks.append(Block(len(heading.group(1)), section, section))
        elif line:
            lines.append(line)
        else:
            flush()
    flush()
    return blocks


def render_pdf(text: str, source: str = "<text>") -> bytes:
    """A PDF of a markdown text (headings bold, paragraphs wrapped), reproducible byte for byte.

    Only Latin-1 text can be drawn with the PDF core fonts; anything else raises DocumentError naming
    `source` and the line.
    """
    from fpdf import FPDF

    for line_no, line in enumerate(text.splitlines(), start=1):
        try:
            line.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise DocumentError(f"{source}:{line_no}: {line[exc.start]!r} cannot be drawn in a PDF core font") from None
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_PDF_DATE)
    pdf.set_producer("llmops-dvc")
    pdf.set_margins(22, 22)
    pdf.set_auto_page_break(True, margin=22)
    pdf.add_page()
    sizes = {1: 17, 2: 13}
    for block in parse_markdown(text):
        if block.level:
            pdf.set_font("Helvetica", "B", sizes.get(block.level, 11))
            pdf.ln(3)
            pdf.multi_cell(0, 8, block.text, new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(0, 6, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    return bytes(pdf.output())


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def extract_pdf(data: bytes, doc: str) -> list[Passage]:
    """One passage per PDF page that has text (pypdf's text extraction, whitespace squeezed)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [_squeeze(page.extract_text() or "") for page in reader.pages]
    except PdfReadError as exc:
        raise DocumentError(f"{doc}.pdf: not a readable PDF ({exc})") from None
    return [Passage(doc, number, None, text) for number, text in enumerate(pages, start=1) if text]


def extract_markdown(text: str, doc: str) -> list[Passage]:
    """One passage per markdown section, starting with its heading (text before the first heading: section None).

    The words are those a PDF rendered from the same text gives back, so both formats chunk alike.
    """
    sections: list[tuple[str | None, list[str]]] = []
    for block in parse_markdown(text):
        if block.level or not sections:
            sections.append((block.section, []))
        sections[-1][1].append(block.text)
    return [Passage(doc, None, section, " ".join(texts)) for section, texts in sections]


def extract(path: Path) -> list[Passage]:
    """The passages of a .pdf or .md file; its id is the file name without the suffix."""
    if path.suffix == ".pdf":
        passages = extract_pdf(path.read_bytes(), path.stem)
    elif path.suffix == ".md":
        passages = extract_markdown(path.read_text(encoding="utf-8"), path.stem)
    else:
        raise DocumentError(f"{path}: unsupported document type (expected {' or '.join(SUFFIXES)})")
    if not passages:
        raise DocumentError(f"{path}: no text found")
    return passages


def document_files(folder: Path) -> list[Path]:
    """The documents in `folder` (sorted by name); two with the same id or none at all is an error."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES) if folder.is_dir() else []
    if not files:
        raise DocumentError(f"{folder}: no {' or '.join(SUFFIXES)} documents (is it pulled? try `dvc pull`)")
    stems = [p.stem for p in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise DocumentError(f"{folder}: several documents share the id {', '.join(duplicates)}")
    return files


def check_chunking(words: int, overlap: int) -> None:
    if not isinstance(words, int) or words < 1:
        raise DocumentError(f"documents.chunking.words: expected a whole number of words >= 1, got {words!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < words:
        raise DocumentError(f"documents.chunking.overlap: expected a whole number from 0 to words-1, got {overlap!r}")


def chunk(passages: Iterable[Passage], words: int, overlap: int) -> list[Chunk]:
    """Windows of `words` words, `overlap` words shared by neighbours, over each document's passages in order.

    Any span of at most overlap+1 words lies whole inside some chunk, so a short gold quote is always findable.
    """
    check_chunking(words, overlap)
    tagged_by_doc: dict[str, list[tuple[str, int | None, str | None]]] = {}
    for p in passages:
        tagged_by_doc.setdefault(p.doc, []).extend((word, p.page, p.section) for word in p.text.split())
    chunks = []
    step = words - overlap
    for doc, tagged in tagged_by_doc.items():
        starts = range(0, max(len(tagged) - overlap, 1), step)
        for number, start in enumerate(starts):
            window = tagged[start : start + words]
            _, page, section = window[0]
            chunks.append(Chunk(f"{doc}#{number}", doc, page, section, " ".join(word for word, _, _ in window)))
    return chunks
