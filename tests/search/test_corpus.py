"""Ranking on the real corpus (read-only session library)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def papers(corpus_library) -> list[dict]:
    client, headers, jobs = corpus_library
    out = []
    for job in jobs.values():
        if job["status"] != "completed" or not job["paper_id"]:
            continue
        p = client.get(f"/paper/{job['paper_id']}", headers=headers).json()
        if p["title"] and len(p["title"].split()) >= 3:
            out.append(p)
    assert len(out) >= 8
    return out


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_own_title_finds_the_paper_first(corpus_library, papers, mode: str) -> None:
    client, headers, _ = corpus_library
    misses = []
    for p in papers:
        r = client.get(
            "/search", params={"q": p["title"], "mode": mode, "limit": 5}, headers=headers
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        if not results or results[0]["doc_id"] != p["doc_id"]:
            misses.append((p["title"], [x["title"] for x in results[:3]]))
    assert not misses, misses


def test_similar_excludes_itself_on_the_corpus(corpus_library, papers) -> None:
    client, headers, _ = corpus_library
    for p in papers:
        body = client.get(f"/similar/{p['doc_id']}", params={"limit": 20}, headers=headers).json()
        found = [x["doc_id"] for x in body["similar_papers"]]
        assert p["doc_id"] not in found
        assert body["total_found"] == len(found) >= 1
        assert all(-1.0 <= x["similarity"] <= 1.0 for x in body["similar_papers"])


def test_corpus_keyword_total_and_paging(corpus_library) -> None:
    client, headers, _ = corpus_library
    first = client.get("/search", params={"q": "the", "limit": 3}, headers=headers).json()
    assert first["total"] >= 8
    seen = [x["doc_id"] for x in first["results"]]
    offset = 3
    while offset < first["total"]:
        page = client.get(
            "/search",
            params={"q": "the", "limit": 3, "offset": offset, "snapshot": first["snapshot"]},
            headers=headers,
        ).json()
        seen += [x["doc_id"] for x in page["results"]]
        offset += 3
    assert len(seen) == len(set(seen)) == first["total"]


def test_corpus_batch_matches_single_queries(corpus_library, papers) -> None:
    client, headers, _ = corpus_library
    titles = [p["title"] for p in papers]
    body = client.post(
        "/search/batch", json={"queries": titles, "limit": 1}, headers=headers
    ).json()
    assert [r["results"][0]["doc_id"] for r in body["results"]] == [p["doc_id"] for p in papers]
