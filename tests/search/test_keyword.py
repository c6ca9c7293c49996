"""Keyword search: safe FTS5 queries, BM25 ranking, snippets, filters, listing, paging."""

from __future__ import annotations

from typing import Any

import pytest

from refserver.search import Filters, keyword_search
from refserver.search.keyword import fts_query
from tests.search.conftest import add_paper

NASTY = [
    '"',
    "AND(",
    "NEAR(a b",
    "*",
    "title:foo",
    "-x",
    "a OR",
    "'; DROP TABLE papers; --",
    "(((",
    "^start",
    "x AND NOT",
]


def _kw(ctx: Any, q: str | None, **kw: Any):
    with ctx.db.read() as s:
        return keyword_search(
            s, q, kw.pop("filters", Filters()), kw.pop("limit", 20), kw.pop("offset", 0), **kw
        )


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('"') is None
    assert fts_query("AND(") == '"AND"'
    assert fts_query("niob* cavity") == '"niob"* "cavity"'
    assert fts_query('"liquid helium" cooled') == '"liquid helium" "cooled"'
    assert fts_query('unbalanced "quote') == '"unbalanced" "quote"'
    assert fts_query("") is None and fts_query(None) is None


@pytest.mark.parametrize("q", NASTY)
def test_special_characters_never_break_the_query(lib, q: str) -> None:
    ctx, _ = lib
    page = _kw(ctx, q)
    assert page.total >= 0 and isinstance(page.results, list)


def test_bm25_ranks_title_match_first_with_highlighted_snippet(lib) -> None:
    ctx, ids = lib
    page = _kw(ctx, "niobium cavities")
    assert page.total == 1
    top = page.results[0]
    assert top.doc_id == ids["Superconducting radio frequency cavities for particle accelerators"]
    assert "<mark>" in top.snippet and top.score > 0
    # A word in several papers: total counts all matches, not the page size.
    assert _kw(ctx, "the", limit=1).total > 1
    assert len(_kw(ctx, "the", limit=1).results) == 1


def test_prefix_and_phrase(lib) -> None:
    ctx, ids = lib
    assert _kw(ctx, "ammon*").results[0].doc_id == ids["Fossil mollusks of the Cretaceous seaway"]
    assert _kw(ctx, '"liquid helium"').total == 1
    assert _kw(ctx, '"helium liquid"').total == 0


def test_snippet_is_html_escaped(ctx) -> None:
    add_paper(
        ctx, "Markup <script>alert(1)</script> widgets", ["widgets <b>bold</b> & more widgets"]
    )
    snip = _kw(ctx, "widgets").results[0].snippet
    assert "<script>" not in snip and "<b>" not in snip and "&lt;" in snip
    assert "<mark>widgets</mark>" in snip


def test_filters(lib) -> None:
    ctx, ids = lib
    assert [r.doc_id for r in _kw(ctx, None, filters=Filters(author="Müller")).results] == [
        ids["Deep learning for protein structure prediction"]
    ]
    years = {r.year for r in _kw(ctx, None, filters=Filters(year_from=2018, year_to=2019)).results}
    assert years == {2018, 2019}
    assert _kw(ctx, None, filters=Filters(year=2019)).total == 2
    assert _kw(ctx, None, filters=Filters(journal="paleontology")).total == 1
    assert _kw(ctx, None, filters=Filters(title="higgs")).total == 1
    # LIKE wildcards typed by a user are literal.
    assert _kw(ctx, None, filters=Filters(title="%")).total == 0
    # Filters combine with the query.
    assert _kw(ctx, "the", filters=Filters(year=2015)).total == 1


def test_listing_without_query_is_newest_first(lib) -> None:
    ctx, _ = lib
    page = _kw(ctx, None)
    assert page.mode == "list" and page.total == 6
    assert (
        page.results[0].title == "Clinical outcomes of hypertension treatment in elderly patients"
    )
    assert [r.id for r in page.results] == sorted((r.id for r in page.results), reverse=True)


def test_paging_is_stable_while_papers_are_added(lib) -> None:
    ctx, _ = lib
    first = _kw(ctx, None, limit=2, offset=0)
    snap = first.snapshot
    seen = [r.doc_id for r in first.results]
    # Papers arrive between page requests; they are newest, so without the
    # snapshot they would push earlier papers onto later pages (repeats).
    add_paper(ctx, "A brand new arrival about cavities", ["helium again"])
    add_paper(ctx, "Another arrival", ["more text"])
    drifting = _kw(ctx, None, limit=2, offset=2)
    assert set(r.doc_id for r in drifting.results) & set(seen)
    for offset in (2, 4):
        page = _kw(ctx, None, limit=2, offset=offset, snapshot=snap)
        assert page.total == 6
        seen += [r.doc_id for r in page.results]
    assert len(seen) == len(set(seen)) == 6
    # Ranked search pages are pinned the same way and ordered by (score, id).
    q1 = _kw(ctx, "the", limit=2, offset=0, snapshot=snap)
    add_paper(ctx, "The the the", ["the the the the"])
    rest = _kw(ctx, "the", limit=50, offset=2, snapshot=snap)
    ids = [r.doc_id for r in q1.results] + [r.doc_id for r in rest.results]
    assert len(ids) == len(set(ids)) == q1.total == rest.total


def test_punctuation_joined_words_are_phrases() -> None:
    assert fts_query("state-of-the-art") == '"state of the art"'
    assert fts_query("title:foo") == '"title foo"'
    assert fts_query("o'neill* x") == '"o neill"* "x"'
