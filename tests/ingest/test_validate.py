"""validate_pdf turns every kind of bad upload into PdfRejected with a code."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from refserver.ingest.validate import PdfRejected, validate_pdf
from tests.ingest.conftest import CORPUS

GOOD = CORPUS / "pdfs" / "dev_jacow_ipac2018.pdf"
LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pages": 500}


def _rejected(path: Path, **limits: int) -> PdfRejected:
    with pytest.raises(PdfRejected) as info:
        validate_pdf(path, **{**LIMITS, **limits})
    assert info.value.reason and info.value.code
    return info.value


def test_good_pdf_returns_page_count() -> None:
    assert validate_pdf(GOOD, **LIMITS) == 3


def test_not_a_pdf_with_pdf_name(tmp_path: Path) -> None:
    p = tmp_path / "paper.pdf"
    p.write_bytes(b"<html><body>Not a PDF at all</body></html>\n" * 20)
    assert _rejected(p).code == "not_pdf"


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pdf"
    p.write_bytes(b"")
    assert _rejected(p).code == "empty"


def test_header_only_is_damaged(tmp_path: Path) -> None:
    p = tmp_path / "stub.pdf"
    p.write_bytes(b"%PDF-1.7\n%garbage that is not a document\n")
    assert _rejected(p).code in ("damaged", "empty")


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9, 0.999])
def test_truncated_pdf(tmp_path: Path, fraction: float) -> None:
    data = GOOD.read_bytes()
    p = tmp_path / "truncated.pdf"
    p.write_bytes(data[: int(len(data) * fraction)])
    assert _rejected(p).code in ("damaged", "empty")


def test_junk_after_eof_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "junk.pdf"
    p.write_bytes(GOOD.read_bytes() + b"\n\x00\x00 trailing junk from a mail gateway\n")
    assert validate_pdf(p, **LIMITS) == 3


def test_encrypted_pdf(tmp_path: Path) -> None:
    p = tmp_path / "locked.pdf"
    with pymupdf.open(GOOD) as doc:
        doc.save(
            p,
            encryption=pymupdf.PDF_ENCRYPT_AES_256,
            owner_pw="owner-secret",
            user_pw="user-secret",
        )
    err = _rejected(p)
    assert err.code == "encrypted"
    assert "password" in err.reason.lower()


def test_too_many_pages(tmp_path: Path) -> None:
    p = tmp_path / "long.pdf"
    doc = pymupdf.open()
    for _ in range(12):
        doc.new_page()
    doc.save(p)
    err = _rejected(p, max_pages=10)
    assert err.code == "too_many_pages"
    assert "12" in err.reason and "10" in err.reason


def test_too_large(tmp_path: Path) -> None:
    err = _rejected(GOOD, max_bytes=100_000)
    assert err.code == "too_large"
    assert "MiB" in err.reason


def test_missing_file(tmp_path: Path) -> None:
    assert _rejected(tmp_path / "nope.pdf").code == "unreadable"


def test_random_bytes_after_header(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    p = tmp_path / "noise.pdf"
    p.write_bytes(b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(20_000)))
    assert _rejected(p).code in ("damaged", "empty")
