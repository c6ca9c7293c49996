"""HNSW tuning against exact search, rebuilds from SQLite, the recorded choice."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import select

from refserver.search.tune import (
    CANDIDATES,
    apply_recorded_params,
    current_params,
    exact_topk,
    index_stats,
    load_vectors,
    rebuild_collections,
    recall,
    tune,
    tune_file,
)
from refserver.storage.library import PageInput, PaperInput
from refserver.storage.models import CheckRun
from refserver.storage.vectors import PAGES, PAPERS


def _fill(ctx, papers: int = 25, pages: int = 40) -> None:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(30, 384))
    for i in range(papers):
        x = centers[rng.integers(0, 30, pages)] + rng.normal(scale=0.3, size=(pages, 384))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        ctx.library.add_paper(
            PaperInput(
                file_sha256=f"{i:064x}",
                file_size=1,
                filename=f"{i}.pdf",
                page_count=pages,
                pages=[
                    PageInput(
                        j + 1,
                        f"paper {i} page {j} words about topic {j % 7} and more text here",
                        "text_layer",
                        1.0,
                        v,
                    )
                    for j, v in enumerate(x)
                ],
                metadata={"title": f"synthetic paper {i}", "year": 2000 + i},
                field_sources={},
                paper_vector=x.mean(0),
                model="all-MiniLM-L6-v2",
                model_revision="test",
            )
        )


def test_exact_topk_and_recall() -> None:
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(300, 16)).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    q = mat[:5]
    top = exact_topk(mat, q, 10)
    assert list(top[:, 0]) == [0, 1, 2, 3, 4]
    full = np.argsort(-(q @ mat.T), axis=1)[:, :10]
    assert (top == full).all()
    assert recall([["a", "b"]], [["a", "c"]]) == 0.5


def test_rebuild_from_sqlite_under_barrier_keeps_entries_and_metadata(ctx) -> None:
    _fill(ctx, papers=3, pages=5)
    counts = rebuild_collections(
        ctx, {"max_neighbors": 16, "ef_construction": 100, "ef_search": 50}
    )
    assert counts == {PAGES: 15, PAPERS: 3}
    assert ctx.vectors.count(PAGES) == 15 and ctx.vectors.count(PAPERS) == 3
    assert (
        current_params(ctx)["max_neighbors"] == 16
        and current_params(ctx, PAPERS)["ef_search"] == 50
    )
    ids, mat = load_vectors(ctx)
    got = ctx.vectors.get(PAGES, ids[:3], include=("metadatas", "embeddings"))
    by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
    for i in range(3):
        assert np.allclose(by_id[ids[i]], mat[i])
    assert all(m["generation"] > 0 and m["checksum"] for m in got["metadatas"])


def test_tune_picks_cheapest_reaching_target_and_records_it(ctx) -> None:
    _fill(ctx)
    # Start from the dearest parameters so the cheaper choice forces a rebuild.
    m, efc, efs = CANDIDATES[-1]
    rebuild_collections(ctx, {"max_neighbors": m, "ef_construction": efc, "ef_search": efs})
    out = tune(ctx, target=0.9, n_queries=40, max_build=2000)
    assert out["vectors"] == 1000 and out["queries"] == 40
    assert out["candidates"][-1]["recall"] >= 0.9
    assert all(c["recall"] < 0.9 for c in out["candidates"][:-1])  # cheaper ones missed
    chosen = out["chosen"]
    assert out["rebuilt"] and out["applied"] and out["reached_target"]
    assert out["recall"] >= 0.9
    params = current_params(ctx)
    assert (params["max_neighbors"], params["ef_search"]) == (
        chosen["max_neighbors"],
        chosen["ef_search"],
    )
    assert ctx.vectors.count(PAGES) == 1000 and ctx.vectors.count(PAPERS) == 25
    saved = json.loads(tune_file(ctx).read_text())
    assert saved["chosen"] == chosen and saved["recall"] == out["recall"]
    with ctx.db.read() as s:
        run = s.execute(select(CheckRun).where(CheckRun.kind == "index_tune")).scalar_one()
    assert run.status == "ok" and run.result["chosen"] == chosen
    # Later rebuilds (by anyone) use the tuned parameters, not the settings' defaults.
    ctx.vectors.hnsw.update({"max_neighbors": 99})
    apply_recorded_params(ctx)
    assert ctx.vectors.hnsw["max_neighbors"] == chosen["max_neighbors"]
    stats = index_stats(ctx)
    assert (
        stats["collections"][PAGES]["chroma_entries"]
        == stats["collections"][PAGES]["sqlite_vectors"]
        == 1000
    )
    assert stats["last_tune"]["chosen"] == chosen
    # Tuning again finds the live parameters already cheapest: no rebuild.
    again = tune(ctx, target=0.9, n_queries=40, max_build=2000)
    assert again["chosen"] == chosen and not again["rebuilt"] and again["applied"]
