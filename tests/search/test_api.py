"""The HTTP contract of the search routes (synthetic library through the app's context)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.search.conftest import TOPICS, add_paper

ITEM_KEYS = {"id", "doc_id", "title", "authors", "year", "journal", "score", "snippet"}


@pytest.fixture
def api(client: TestClient) -> tuple[TestClient, dict[str, str]]:
    ctx = client.app.state.ctx
    ids = {
        t["title"]: add_paper(
            ctx, t["title"], t["pages"], authors=t["authors"], year=t["year"], journal=t["journal"]
        )
        for t in TOPICS
    }
    return client, ids


def _check_page(body: dict[str, Any]) -> None:
    assert {"query", "total", "limit", "offset", "results"} <= set(body)
    assert isinstance(body["results"], list) and isinstance(body["total"], int)
    for item in body["results"]:
        assert set(item) >= ITEM_KEYS
        assert isinstance(item["authors"], list) and isinstance(item["snippet"], str)
        assert isinstance(item["score"], float)


def test_get_search_keyword_shape_total_and_filters(api) -> None:
    client, ids = api
    r = client.get("/search", params={"q": "the", "limit": 2, "offset": 0})
    assert r.status_code == 200
    body = r.json()
    _check_page(body)
    assert body["query"] == "the" and body["limit"] == 2 and body["offset"] == 0
    assert body["total"] > 2 and len(body["results"]) == 2
    r = client.get("/search", params={"q": "niobium"}).json()
    assert (
        r["results"][0]["doc_id"] == ids[TOPICS[0]["title"]]
        and "<mark>" in r["results"][0]["snippet"]
    )
    assert client.get("/search", params={"author": "Müller"}).json()["total"] == 1
    assert client.get("/search", params={"year": 2019}).json()["total"] == 2
    assert client.get("/search", params={"year_from": 2015, "year_to": 2018}).json()["total"] == 2
    assert client.get("/search", params={"journal": "bioinformatics"}).json()["total"] == 1
    assert client.get("/search", params={"title": "higgs"}).json()["total"] == 1
    listing = client.get("/search").json()
    assert listing["total"] == 6 and listing["results"][0]["title"] == TOPICS[-1]["title"]


@pytest.mark.parametrize("q", ['"', "AND(", "NEAR(", "*", "a:b", "((", "'\""])
def test_fts_syntax_from_users_is_not_a_500(api, q: str) -> None:
    client, _ = api
    r = client.get("/search", params={"q": q})
    assert r.status_code == 200, r.text
    _check_page(r.json())


def test_bad_parameters_are_4xx(api) -> None:
    client, _ = api
    assert client.get("/search", params={"limit": 0}).status_code == 422
    assert client.get("/search", params={"mode": "magic"}).status_code == 422
    assert client.get("/search", params={"year": "recent"}).status_code == 422
    assert client.post("/search/vector", json={}).status_code == 400
    assert client.post("/search/vector", json={"query": "x", "limit": 1000}).status_code == 422
    assert (
        client.post(
            "/search/vector", content=b"not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert client.post("/search/batch", json={"queries": []}).status_code == 422


def test_vector_search_body_or_query_params(api) -> None:
    client, ids = api
    srf = ids[TOPICS[0]["title"]]
    r = client.post("/search/vector", json={"query": "cold niobium resonator", "limit": 3})
    assert r.status_code == 200
    body = r.json()
    _check_page(body)
    top = body["results"][0]
    assert top["doc_id"] == srf and top["pages"] and top["page"] in top["pages"]
    r2 = client.post("/search/vector", params={"query": "cold niobium resonator", "limit": 3})
    assert [x["doc_id"] for x in r2.json()["results"]] == [x["doc_id"] for x in body["results"]]
    filt = client.post(
        "/search/vector", json={"query": "cold niobium resonator", "filters": {"year_from": 2019}}
    ).json()
    assert srf not in [x["doc_id"] for x in filt["results"]]
    flat = client.post(
        "/search/vector", json={"query": "cold niobium resonator", "year_from": 2019}
    ).json()
    assert [x["doc_id"] for x in flat["results"]] == [x["doc_id"] for x in filt["results"]]
    q8 = client.post(
        "/search/vector", json={"query": "cold niobium resonator", "index": "int8"}
    ).json()
    assert q8["results"][0]["doc_id"] == srf and q8["index"] == "int8"
    sem = client.get("/search", params={"q": "cold niobium resonator", "mode": "semantic"}).json()
    assert sem["results"][0]["doc_id"] == srf and sem["mode"] == "semantic"


def test_hybrid_get_and_post(api) -> None:
    client, ids = api
    higgs = ids[TOPICS[4]["title"]]
    g = client.get("/search/hybrid", params={"query": "higgs photons", "limit": 3})
    p = client.post("/search/hybrid", json={"query": "higgs photons", "limit": 3})
    assert g.status_code == p.status_code == 200
    _check_page(g.json())
    assert g.json()["results"][0]["doc_id"] == p.json()["results"][0]["doc_id"] == higgs
    assert (
        client.get("/search", params={"q": "higgs photons", "mode": "hybrid"}).json()["mode"]
        == "hybrid"
    )


def test_batch_route(api) -> None:
    client, ids = api
    queries = ["cold niobium resonator", "ammonite shells", "protein folding networks"]
    r = client.post("/search/batch", json={"queries": queries, "limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 3 and len(body["results"]) == 3
    for q, page in zip(queries, body["results"], strict=True):
        _check_page(page)
        assert page["query"] == q
    assert [p["results"][0]["doc_id"] for p in body["results"]] == [
        ids[TOPICS[i]["title"]] for i in range(3)
    ]
    kw = client.post("/search/batch", json={"queries": ["niobium"], "mode": "keyword"}).json()
    assert kw["results"][0]["total"] == 1


def test_similar_route(api) -> None:
    client, ids = api
    srf = ids[TOPICS[0]["title"]]
    r = client.get(f"/similar/{srf}", params={"limit": 3})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"query_doc_id", "similar_papers", "total_found"}
    assert body["query_doc_id"] == srf and body["total_found"] == 3
    for item in body["similar_papers"]:
        assert set(item) == {"doc_id", "similarity", "metadata"} and item["doc_id"] != srf
    assert client.get("/similar/unknown-paper").status_code == 404
    assert client.get(f"/similar/{srf}", params={"limit": 0}).status_code == 422


def test_search_needs_sign_in_when_reading_is_private(tmp_path) -> None:
    from refserver.api.app import create_app
    from tests.conftest import login, make_settings

    with TestClient(create_app(make_settings(tmp_path / "d", public_read=False))) as c:
        assert c.get("/search", params={"q": "x"}).status_code == 401
        assert c.post("/search/vector", json={"query": "x"}).status_code == 401
        assert c.get("/similar/x").status_code == 401
        h = login(c)
        assert c.get("/search", params={"q": "x"}, headers=h).status_code == 200
