"""The dev corpus through the API: metadata pass rate and every paper route."""

from __future__ import annotations

import difflib
import re
import unicodedata

import pymupdf

from tests.conftest import CORPUS, corpus_manifest


def fold(s: str | None) -> str:
    s = unicodedata.normalize("NFKD", s or "")
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


def family(name: str) -> str:
    parts = fold(name).split()
    return parts[-1] if parts else ""


def title_ok(got: str | None, want: str) -> bool:
    return difflib.SequenceMatcher(None, fold(got), fold(want)).ratio() >= 0.9


def authors_ok(got: list[str], want: list[str]) -> bool:
    g = {family(a) for a in got}
    found = sum(1 for a in want if family(a) in g)
    return found >= 0.8 * len(want) and len(got) <= len(want) + 3


def test_corpus_metadata_pass_rate(corpus_library) -> None:
    client, auth, jobs = corpus_library
    rows, score = [], {"title": 0, "authors": 0, "year": 0, "doi": 0}
    manifest = corpus_manifest()
    for entry in manifest:
        job = jobs[entry["file"]]
        assert job["status"] == "completed", (entry["file"], job)
        meta = client.get(f"/metadata/{job['paper_id']}", headers=auth).json()
        truth = entry["truth"]
        ok = {
            "title": title_ok(meta["title"], truth["title"]),
            "authors": authors_ok(meta["authors"], truth["authors"]),
            "year": meta["year"] == truth["year"],
            "doi": (meta["doi"] or "").lower() == (truth.get("doi") or "").lower(),
        }
        for k, v in ok.items():
            score[k] += v
        rows.append((entry["file"].split("/")[-1], ok))
    n = len(manifest)
    print("\nmetadata through the API (upload → job → /metadata):")
    for name, ok in rows:
        print(f"  {name:38s} " + " ".join(f"{k}={'ok' if v else 'NO'}" for k, v in ok.items()))
    print("  pass rate: " + ", ".join(f"{k} {v}/{n} ({v / n:.0%})" for k, v in score.items()))
    all_four = sum(all(ok.values()) for _, ok in rows)
    print(f"  all four right: {all_four}/{n}")
    assert score["title"] / n >= 0.8
    assert score["year"] / n >= 0.8
    assert score["doi"] / n >= 0.8
    assert score["authors"] / n >= 0.7


def test_paper_routes_shapes(corpus_library) -> None:
    client, auth, jobs = corpus_library
    entry = next(e for e in corpus_manifest() if "jner" in e["file"])
    doc_id = jobs[entry["file"]]["paper_id"]
    p = client.get(f"/paper/{doc_id}", headers=auth).json()
    for key in (
        "id",
        "doc_id",
        "filename",
        "title",
        "ocr_text",
        "ocr_quality",
        "processing_time",
        "created_at",
        "updated_at",
    ):
        assert key in p
    assert (
        p["doc_id"] == doc_id and len(p["ocr_text"]) > 10000 and p["page_count"] == entry["pages"]
    )
    m = client.get(f"/metadata/{doc_id}", headers=auth).json()
    assert isinstance(m["authors"], list) and isinstance(m["keywords"], list)
    assert m["field_sources"]["title"] and m["abstract"]
    t = client.get(f"/text/{doc_id}", headers=auth).json()
    assert t["text_length"] == len(t["text"]) > 0 and 0 < t["ocr_quality"] <= 1
    assert all(pg["source"] == "text_layer" for pg in t["pages"])
    e = client.get(f"/embedding/{doc_id}", headers=auth).json()
    assert e["dimension"] == 384 == len(e["vector"]) and e["model"] == "all-MiniLM-L6-v2"
    assert abs(sum(x * x for x in e["vector"]) - 1) < 1e-3
    pages = client.get(f"/embedding/{doc_id}/pages", headers=auth).json()
    assert pages["total_pages"] == entry["pages"]
    one = client.get(f"/embedding/{doc_id}/page/2", headers=auth).json()
    assert one["page_number"] == 2 and len(one["vector"]) == 384
    assert client.get(f"/embedding/{doc_id}/page/999", headers=auth).status_code == 404
    lay = client.get(f"/layout/{doc_id}?page=1", headers=auth).json()
    blocks = lay["pages"][0]["blocks"]
    assert any(b["type"] == "heading" for b in blocks) and any(b["type"] == "text" for b in blocks)
    prev = client.get(f"/preview/{doc_id}", headers=auth)
    assert prev.status_code == 200 and prev.content[:8] == b"\x89PNG\r\n\x1a\n"
    dl = client.get(f"/download/{doc_id}", headers=auth)
    assert dl.status_code == 200 and dl.content == (CORPUS / entry["file"]).read_bytes()


def test_stats_and_vector_stats(corpus_library) -> None:
    client, auth, _ = corpus_library
    n = len(corpus_manifest())
    pages = sum(e["pages"] for e in corpus_manifest())
    st = client.get("/stats", headers=auth).json()
    assert st["total_papers"] == n == st["papers_with_embeddings"]
    assert st["total_pages"] == pages
    vs = client.get("/vector/stats", headers=auth).json()
    by_name = {c["name"]: c["count"] for c in vs["collections"]}
    assert by_name["papers"] == n
    assert by_name["pages"] >= pages - 5  # pages without any text have no vector
    assert vs["total_vectors"] == vs["sqlite_vectors"]


def test_stored_files_are_content_addressed_and_intact(corpus_library) -> None:
    client, _, _ = corpus_library
    ctx = client.app.state.ctx
    from refserver.storage.files import sha256_file

    stored = dict(ctx.files.iter_files())
    assert len(stored) == len(corpus_manifest())
    for entry in corpus_manifest():
        assert entry["sha256"] in stored
        assert sha256_file(stored[entry["sha256"]]) == entry["sha256"]
        with pymupdf.open(stored[entry["sha256"]]) as d:
            assert len(d) == entry["pages"]
