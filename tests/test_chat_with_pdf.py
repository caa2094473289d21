"""chat_with_pdf (RAG): documents -> passages -> chunks -> index, the dataset's gold passages, and the pipeline."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Reproduced
from test_flows import load

from stages.data import documents, embeddings, vector_index
from stages.metrics import retrieval

UC = "chat_with_pdf"
STAGES = ("prepare", "run", "evaluate", "report")
SOURCES = REPO / "use_cases" / UC / "documents"
CHUNKING = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"][UC]["documents"]["chunking"]


def tracked(pointer: Path) -> dict[str, bytes]:
    """The files a DVC pointer tracks ({relative path: bytes}), read from the committed examples store."""
    store = REPO / ".dvc" / "examples-store" / "files" / "md5"
    out = yaml.safe_load(pointer.read_text())["outs"][0]
    md5 = out["md5"]
    if not md5.endswith(".dir"):
        return {out["path"]: (store / md5[:2] / md5[2:]).read_bytes()}
    entries = json.loads((store / md5[:2] / md5[2:]).read_text())
    return {entry["relpath"]: (store / entry["md5"][:2] / entry["md5"][2:]).read_bytes() for entry in entries}


def tracked_passages() -> list[documents.Passage]:
    passages = []
    for name, data in sorted(tracked(REPO / "use_cases" / UC / "data" / "docs.dvc").items()):
        doc = Path(name).stem
        pdf = name.endswith(".pdf")
        passages += documents.extract_pdf(data, doc) if pdf else documents.extract_markdown(data.decode(), doc)
    return passages


DATASET = [json.loads(line) for line in tracked(REPO / "use_cases" / UC / "data" / "questions.jsonl.dvc")[
    "questions.jsonl"].decode().splitlines()]  # fmt: skip


def test_pdf_rendering_is_reproducible_and_extraction_gives_the_text_back() -> None:
    text = (SOURCES / "warranty.md").read_text()
    pdf = documents.render_pdf(text)
    assert pdf == documents.render_pdf(text)  # fixed dates and producer: same bytes, same DVC hash
    pages = documents.extract_pdf(pdf, "warranty")
    assert len(pages) >= 2 and [p.page for p in pages] == list(range(1, len(pages) + 1))
    sections = documents.extract_markdown(text, "warranty")
    assert " ".join(p.text for p in pages) == " ".join(p.text for p in sections)
    assert sections[1].section == "Coverage periods" and sections[1].text.startswith("Coverage periods The")


def test_rendering_names_the_line_a_pdf_font_cannot_draw() -> None:
    with pytest.raises(documents.DocumentError, match=r"notes\.md:3: '→'"):
        documents.render_pdf("# Notes\n\nGo left → then right.\n", "notes.md")


def test_the_committed_pdfs_are_what_the_sources_render_to() -> None:
    docs = tracked(REPO / "use_cases" / UC / "data" / "docs.dvc")
    assert {Path(n).stem for n in docs} == {p.stem for p in SOURCES.glob("*.md")}
    for name, data in docs.items():
        source = (SOURCES / f"{Path(name).stem}.md").read_text()
        assert data == (documents.render_pdf(source) if name.endswith(".pdf") else source.encode()), name


def test_chunks_have_the_length_overlap_and_stable_ids() -> None:
    words = [f"w{i}" for i in range(25)]
    passages = [
        documents.Passage("a", 1, None, " ".join(words[:12])),
        documents.Passage("a", 2, None, " ".join(words[12:])),
        documents.Passage("b", None, "Intro", "only four words here"),
    ]
    chunks = documents.chunk(passages, words=10, overlap=3)
    assert [c.id for c in chunks] == ["a#0", "a#1", "a#2", "a#3", "b#0"]
    a = [c.text.split() for c in chunks if c.doc == "a"]
    assert all(len(c) <= 10 for c in a) and a[0] == words[:10] and a[-1][-1] == "w24"
    assert all(left[-3:] == right[:3] for left, right in itertools.pairwise(a))
    assert [c.page for c in chunks] == [1, 1, 2, 2, None] and chunks[-1].section == "Intro"
    assert documents.chunk(passages, words=10, overlap=3) == chunks
    with pytest.raises(documents.DocumentError, match=r"chunking\.overlap"):
        documents.chunk(passages, words=10, overlap=10)


def test_dataset_rows_name_a_gold_quote_that_lies_whole_in_a_chunk() -> None:
    assert len(DATASET) >= 40 and len({row["question"] for row in DATASET}) == len(DATASET)
    chunks = documents.chunk(tracked_passages(), CHUNKING["words"], CHUNKING["overlap"])
    for row in DATASET:
        assert row["answer"] and len(row["gold_quote"].split()) <= CHUNKING["overlap"] + 1, row
        gold = retrieval.gold_ids([c.to_dict() for c in chunks], row["gold_doc"], row["gold_quote"])
        assert gold, f"{row['gold_doc']}: no chunk holds {row['gold_quote']!r}"


def test_index_search_returns_the_gold_chunk(tmp_path: Path) -> None:
    chunks = [c.to_dict() for c in documents.chunk(tracked_passages(), CHUNKING["words"], CHUNKING["overlap"])]
    vector_index.write(tmp_path, chunks, embeddings.encode([c["text"] for c in chunks]), embeddings.MODEL_NAME)
    index = vector_index.load(tmp_path)
    questions = {row["question"]: row for row in DATASET}
    for question in (
        "Who decides a warranty dispute after a second inspection?",
        "What is the voucher for returning an old battery worth?",
        "How much does the Kestrel Haul cost?",
    ):
        row = questions[question]
        hits = index.search(embeddings.encode([question])[0], 3)
        gold = retrieval.gold_ids([chunk for chunk, _ in hits], row["gold_doc"], row["gold_quote"])
        assert retrieval.first_relevant_rank([chunk["id"] for chunk, _ in hits], gold) == 1, question
    (tmp_path / "vectors.npy").unlink()
    with pytest.raises(vector_index.VectorIndexError, match=r"vectors\.npy missing"):
        vector_index.load(tmp_path)


def test_rag_metrics_count_unparseable_judge_answers_as_errors_not_scores() -> None:
    aggregate = load(f"use_cases/{UC}/flows/evaluate/aggregate.py")
    grades = [{"rank": 1, "similarity": 1.0, "correct": True}, {"rank": 2, "similarity": 0.5, "correct": False},
              {"rank": None, "similarity": 0.0, "correct": False}]  # fmt: skip
    verdicts = [{"groundedness": 4, "groundedness_error": None}, {"groundedness": 2, "groundedness_error": None},
                {"groundedness": None, "groundedness_error": "judge answer 'great' holds no score"}]  # fmt: skip
    metrics = aggregate.rag_metrics(grades, verdicts)
    assert metrics == {"hit_rate": 0.6667, "mrr": 0.5, "similarity": 0.5, "answer_match": 0.3333,
                       "groundedness.scored": 2, "groundedness.errors": 1, "groundedness.mean": 3.0}  # fmt: skip


def test_pipeline_on_the_stub_retrieves_answers_and_judges(reproduced_build: Reproduced) -> None:
    # The session's project (tests/conftest.py `reproduced_rules`): the judge answered 4, except for the first
    # question's row, where its answer held no score.
    project, output, first = reproduced_build, reproduced_build.console, DATASET[0]["question"]
    ran = [stage for stage in reproduced_build.ran if stage.startswith("docs_") or stage.endswith(f"@{UC}")]
    assert set(ran) == {"docs_extract", "docs_chunk", "docs_index", *(f"{s}@{UC}" for s in STAGES)}
    assert (project.root / "use_cases" / UC / "flows" / "chat" / "index" / "vectors.npy").is_file()
    data = project.root / "data" / UC
    rows = [json.loads(line) for line in (data / "eval" / "rows" / "v1.jsonl").read_text().splitlines()]
    assert len(rows) == len(DATASET) and all(row["run_error"] is None and row["eval_error"] is None for row in rows)
    assert all(len(row["outputs"]["retrieved"]) == 3 for row in rows)  # v1: top_k 3
    unparsed = [row for row in rows if row["eval"]["groundedness_error"]]
    assert [row["question"] for row in unparsed] == [first] and unparsed[0]["eval"]["groundedness"] is None
    metrics = json.loads((data / "eval" / "metrics.json").read_text())
    assert metrics["groundedness"] == {"scored": len(DATASET) - 1, "errors": 1, "mean": 4.0}
    assert "groundedness.errors=1, groundedness.mean=4.0" in output  # the evaluate stage's summary line
    assert 0.5 <= metrics["hit_rate"] <= 1 and 0 < metrics["mrr"] <= metrics["hit_rate"]
    html = (data / "report" / "report.html").read_text()
    assert "4.00 / 5" in html and "1 unparseable" in html
    judge_prompts = [r["body"]["prompt"] for r in reproduced_build.requests if "Rate how well" in r["body"]["prompt"]]
    assert len(judge_prompts) == len(DATASET)
