"""The split full-text index: metadata in ``papers_fts``, text in ``paper_bodies_fts``."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from refserver.search import Filters, keyword_search
from refserver.storage import fts
from refserver.storage.db import MIGRATIONS_DIR
from tests.search.conftest import add_paper


def _hits(ctx: Any, q: str) -> list[str]:
    with ctx.db.read() as s:
        return [r.doc_id for r in keyword_search(s, q, Filters(), 20, 0).results]


def _integrity(ctx: Any) -> None:
    """FTS5's own check: each index holds exactly what its content holds."""
    with ctx.db.engine.begin() as conn:
        for table in ("papers_fts", "paper_bodies_fts"):
            conn.execute(text(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)"))


def _text_index(ctx: Any) -> tuple[Any, ...]:
    with ctx.db.read() as s:
        return tuple(
            s.execute(
                text(
                    "SELECT (SELECT count(*) FROM paper_bodies_fts_data), "
                    "(SELECT sum(length(block)) FROM paper_bodies_fts_data), "
                    "(SELECT group_concat(id) FROM paper_bodies_fts_data), "
                    "(SELECT count(*) FROM paper_bodies_fts_idx)"
                )
            ).one()
        )


def test_every_term_may_be_in_the_metadata_or_on_any_page(ctx: Any) -> None:
    for i in range(4):  # BM25's IDF needs more than a couple of documents
        add_paper(ctx, f"Unrelated study {i}", [f"filler text number {i}"])
    a = add_paper(ctx, "Niobium resonators", ["cryogenic setup", "measured quench fields"])
    b = add_paper(ctx, "Quench protection", ["copper magnets"], authors=["Ada Lovelace"])
    assert _hits(ctx, "niobium quench") == [a]  # title + page 2
    assert _hits(ctx, "cryogenic quench") == [a]  # page 1 + page 2
    assert _hits(ctx, "lovelace copper") == [b]  # author + page
    assert set(_hits(ctx, "quench")) == {a, b}
    assert _hits(ctx, "niobium copper") == []
    # The title weighs more than a page: b has "quench" in its title.
    assert _hits(ctx, "quench")[0] == b
    with ctx.db.read() as s:
        top = keyword_search(s, "cryogenic", Filters(), 5, 0).results[0]
    assert "<mark>cryogenic</mark>" in top.snippet
    _integrity(ctx)


def test_metadata_edits_do_not_rewrite_the_text_index(ctx: Any) -> None:
    doc = add_paper(ctx, "An old title", ["page text about widgets " * 200] * 5)
    before = _text_index(ctx)
    ctx.library.update_metadata(doc, {"title": "A corrected heading", "authors": ["B. Cole"]})
    assert _text_index(ctx) == before
    assert _hits(ctx, "corrected widgets") == [doc]
    assert _hits(ctx, "old title") == []
    _integrity(ctx)


def test_deleting_a_paper_removes_its_text_from_the_index(ctx: Any) -> None:
    keep = add_paper(ctx, "Kept paper", ["shared words and zebrafish"])
    gone = add_paper(ctx, "Removed paper", ["shared words and axolotl"])
    assert ctx.library.delete_paper(gone)
    assert _hits(ctx, "axolotl") == [] and _hits(ctx, "shared") == [keep]
    with ctx.db.read() as s:
        assert s.execute(text("SELECT count(*) FROM paper_bodies_fts")).scalar() == 1
    _integrity(ctx)


def test_migration_moves_page_text_out_of_the_metadata_row_and_back(ctx: Any) -> None:
    doc = add_paper(ctx, "Graphene membranes", ["first page", "permeation of helium"])
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", ctx.db.url)
    cfg.attributes["connection_engine"] = ctx.db.engine
    command.downgrade(cfg, "vector_storage_0001")
    with ctx.db.read() as s:
        old = s.execute(text("SELECT rowid FROM papers_fts WHERE papers_fts MATCH 'permeation'"))
        assert old.scalars().all() != []
        assert (
            s.execute(text("SELECT name FROM sqlite_master WHERE name LIKE 'paper_bodies%'")).all()
            == []
        )
    ctx.db.migrate()
    assert _hits(ctx, "graphene permeation") == [doc]
    _integrity(ctx)


def _segments(ctx: Any) -> int:
    # FTS5 %_data rowids of leaf pages carry the segment id in their top bits.
    with ctx.db.read() as s:
        return s.execute(
            text("SELECT count(DISTINCT id >> 37) FROM paper_bodies_fts_data WHERE id >= (1 << 37)")
        ).scalar_one()


def test_compaction_merges_the_text_index_into_one_segment(ctx: Any) -> None:
    docs = [add_paper(ctx, f"Paper {i}", [f"common words and token{i}"]) for i in range(12)]
    assert _segments(ctx) > 1  # one transaction each: FTS5 wrote several segments
    g0 = ctx.db.generation()
    before = {q: _hits(ctx, q) for q in ("common", "token3", "paper token7")}
    done = fts.compact(ctx.db, step=1)
    assert _segments(ctx) == 1 and done.transactions >= 2  # merged, then found nothing left
    assert {q: _hits(ctx, q) for q in before} == before and before["token3"] == [docs[3]]
    assert ctx.db.generation() == g0  # maintenance, not a library change
    _integrity(ctx)
    again = fts.compact(ctx.db, min_outside_share=0)
    assert again.skipped and again.transactions == 0  # one segment: nothing to merge
    add_paper(ctx, "Paper 12", ["common words and token12"])
    stopped = fts.compact(ctx.db, should_stop=lambda: True, min_outside_share=0)
    assert stopped.transactions == 0 and not stopped.skipped and _segments(ctx) == 2


def test_compaction_waits_until_enough_of_the_index_is_outside_its_big_segment(
    ctx: Any,
) -> None:
    long_text = " ".join(f"word{i} shared term{i % 97}" for i in range(3000))
    for i in range(8):
        add_paper(ctx, f"Long paper {i}", [long_text + f" own{i}"])
    fts.compact(ctx.db, min_outside_share=0)  # (FTS5's automerge may have done it)
    assert _segments(ctx) == 1
    small = add_paper(ctx, "Short paper", ["a short page with token77"])
    with ctx.db.read() as s:
        share = fts.outside_share(s.connection())
        # the seeks agree with counting every leaf page (height 0, no doclist-index bit)
        leaves = s.execute(
            text(
                "SELECT id >> 37, count(*) FROM paper_bodies_fts_data "
                "WHERE id >= (1 << 37) AND ((id >> 31) & 63) = 0 GROUP BY 1"
            )
        ).all()
        assert fts.segment_pages(s.connection()) == dict(leaves) and len(leaves) == 2
    assert 0 < share < fts.COMPACT_OUTSIDE_SHARE  # a short paper beside eight long ones
    before = _text_index(ctx)
    skipped = fts.compact(ctx.db)
    assert (
        skipped.skipped and skipped.transactions == 0 and skipped.outside_share == round(share, 4)
    )
    assert _text_index(ctx) == before  # not one page of the index rewritten
    assert _hits(ctx, "token77") == [small]

    # enough new text outside the big segment: the merge-down runs
    for i in range(3):
        add_paper(ctx, f"More {i}", [long_text])
    with ctx.db.read() as s:
        assert len(fts.segment_pages(s.connection())) >= 3
    done = fts.compact(ctx.db)
    assert not done.skipped and done.outside_share > fts.COMPACT_OUTSIDE_SHARE
    assert _segments(ctx) == 1 and _hits(ctx, "token77") == [small]
    _integrity(ctx)


def test_compaction_gives_way_to_a_restore_swap(ctx: Any) -> None:
    for i in range(5):
        add_paper(ctx, f"Paper {i}", [f"words {i}"])
    segments = _segments(ctx)
    with ctx.db.paused_writes():  # what a restore holds while it swaps files in
        assert fts.compact(ctx.db).transactions == 0
    assert _segments(ctx) == segments > 1
    fts.compact(ctx.db)
    assert _segments(ctx) == 1


def test_consistency_check_finds_and_fixes_index_drift(ctx: Any) -> None:
    from refserver.safety.consistency import check, fix

    docs = [add_paper(ctx, f"Drift paper {i}", [f"unique{i} words"]) for i in range(3)]
    with ctx.db.read() as s:
        ids = [ctx.library.get(s, d).id for d in docs]
    assert [i for i in check(ctx).issues if i.detail.get("fts")] == []
    # What a bug or a hand edit could leave: a paper out of each index, and rows
    # of papers that never existed in each.
    with ctx.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM papers_fts WHERE rowid = :r"), {"r": ids[0]})
        conn.execute(text("DELETE FROM paper_bodies_fts WHERE rowid = :r"), {"r": ids[1]})
        conn.execute(text("INSERT INTO papers_fts (rowid, title) VALUES (9999, 'ghost title')"))
        conn.execute(text("INSERT INTO paper_bodies_fts (rowid, body) VALUES (9998, 'ghost')"))
    assert _hits(ctx, "unique1") == [] and _hits(ctx, "ghost") == []  # joins hide ghosts
    found = {
        (i.detail["table"], i.detail["fts"], i.detail.get("paper_id", i.detail.get("row_id")))
        for i in check(ctx).issues
        if i.detail.get("fts")
    }
    assert found == {
        ("papers_fts", "missing", ids[0]),
        ("paper_bodies_fts", "missing", ids[1]),
        ("papers_fts", "orphan", 9999),
        ("paper_bodies_fts", "orphan", 9998),
    }
    report = fix(ctx, dry_run=False)  # (add_paper stores no PDFs: pdf_missing stays)
    assert [f for f in report.failed if f["type"] == "sqlite_integrity"] == []
    assert len([f for f in report.fixed if f["type"] == "sqlite_integrity"]) == 4
    assert [i for i in check(ctx).issues if i.detail.get("fts")] == []
    assert _hits(ctx, "unique1") == [docs[1]] and _hits(ctx, "drift paper 0") != []
    with ctx.db.read() as s:
        ghosts = s.execute(
            text("SELECT count(*) FROM paper_bodies_fts WHERE paper_bodies_fts MATCH 'ghost'")
        ).scalar_one()
    assert ghosts == 0
    _integrity(ctx)
