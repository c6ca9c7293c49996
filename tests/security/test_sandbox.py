"""The PDF sandbox: hostile files rejected with the right reason, limits enforced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from refserver.ingest.sandbox import validate_pdf_sandboxed
from refserver.ingest.validate import PdfRejected
from tests.conftest import corpus_pdf
from tests.security import hostile

LIMIT = 100 * 1024 * 1024

EXPECTED = {
    "zero_bytes": "empty",
    "not_a_pdf": "not_pdf",
    "html_named_pdf": "not_pdf",
    "truncated": "truncated|damaged",  # validate_pdf may spot it first
    "huge_page_count": "damaged",
    "deep_nesting": "too_complex",
    "deep_content_nesting": "damaged",
    "image_bomb": "image_too_large",
    "javascript": "active_content",
    "launch_action": "active_content",
    "encrypted": "encrypted",
    "no_pages": "empty",
    "page_tree_loop": "damaged",
}


def test_every_hostile_maker_has_an_expectation() -> None:
    assert set(EXPECTED) == set(hostile.HOSTILE)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_pdf_rejected_with_reason(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(hostile.HOSTILE[name]())
    with pytest.raises(PdfRejected) as info:
        validate_pdf_sandboxed(path, LIMIT, 2000, timeout=30, memory_mb=512)
    assert info.value.code in EXPECTED[name].split("|"), info.value.reason
    assert info.value.reason


def test_decompression_bomb_rejected_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pdf"
    path.write_bytes(hostile.decompression_bomb(300))
    t0 = time.monotonic()
    with pytest.raises(PdfRejected) as info:
        validate_pdf_sandboxed(path, LIMIT, 2000, timeout=30, memory_mb=512)
    assert info.value.code == "too_complex"
    assert time.monotonic() - t0 < 15


def test_real_papers_pass(tmp_path: Path) -> None:
    for name in ("jacow", "arxiv", "plosone"):
        assert validate_pdf_sandboxed(corpus_pdf(name), LIMIT, 2000) > 0


def test_page_limit_enforced(tmp_path: Path) -> None:
    path = tmp_path / "ok.pdf"
    path.write_bytes(hostile.valid_pdf())
    assert validate_pdf_sandboxed(path, LIMIT, 1) == 1
    with pytest.raises(PdfRejected) as info:
        validate_pdf_sandboxed(path, 10, 1)
    assert info.value.code == "too_large"


def test_time_limit_kills_the_child(tmp_path: Path) -> None:
    """A check that outlives its budget is killed and reported, not waited for."""
    path = tmp_path / "ok.pdf"
    path.write_bytes(hostile.valid_pdf())
    t0 = time.monotonic()
    with pytest.raises(PdfRejected) as info:
        validate_pdf_sandboxed(path, LIMIT, 10, timeout=0.01)
    assert info.value.code == "timeout"
    assert time.monotonic() - t0 < 5


def test_memory_cap_applies_to_the_child(tmp_path: Path) -> None:
    """A page with 64 MiB of (harmless) content fails under a 160 MiB cap, passes under 1 GiB."""
    path = tmp_path / "big.pdf"
    path.write_bytes(
        hostile.raw_pdf(
            [
                b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                hostile.stream(b"BT /F1 12 Tf 72 720 Td (big) Tj ET\n" + b" " * (64 << 20)),
            ]
        )
    )
    with pytest.raises(PdfRejected) as info:
        validate_pdf_sandboxed(path, 2 * LIMIT, 10, memory_mb=160)
    assert info.value.code == "too_complex"
    assert "160 MiB" in info.value.reason
    # The same file passes with a normal cap: the limit, not the file, failed it.
    assert validate_pdf_sandboxed(path, 2 * LIMIT, 10, memory_mb=1024) == 1
