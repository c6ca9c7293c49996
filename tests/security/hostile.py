"""Hostile and malformed PDFs, made in the test (never shipped as files).

Each maker returns bytes; the raw ones are written with a correct xref table so
that the failure is the one intended, not a parse error that MuPDF repairs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pymupdf


def raw_pdf(objects: list[bytes], *, root: int = 1) -> bytes:
    """A PDF from object bodies (object i+1 is ``objects[i]``) with a real xref."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        xref,
    )
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def valid_pdf(text: str = "A perfectly ordinary page of a paper.") -> bytes:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(72, 72, 540, 770), text, fontsize=11)
    data = doc.tobytes()
    doc.close()
    return data


def truncated() -> bytes:
    data = valid_pdf("Truncated " * 400)
    return data[: len(data) // 3]


def huge_page_count() -> bytes:
    """A page tree that claims two billion pages."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 2000000000 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def deep_nesting(depth: int = 200_000) -> bytes:
    """An object nested ``depth`` arrays deep, referenced from the page."""
    nested = b"[" * depth + b"]" * depth
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Foo 5 0 R >>",
            stream(b"BT /F1 12 Tf 72 720 Td (nested) Tj ET"),
            nested,
        ]
    )


def deep_content_nesting(depth: int = 100_000) -> bytes:
    """A content stream of ``depth`` unbalanced ``q`` (save graphics state) operators."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            stream(zlib.compress(b"q " * depth + b"[" * depth), b"/Filter /FlateDecode"),
        ]
    )


def decompression_bomb(inflated_mb: int = 1024) -> bytes:
    """A page whose content stream inflates to ``inflated_mb`` MiB (two Flate layers)."""
    co = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    inner = b"".join(co.compress(block) for _ in range(inflated_mb)) + co.flush()
    outer = zlib.compress(inner, 9)
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            stream(outer, b"/Filter [/FlateDecode /FlateDecode]"),
        ]
    )


def image_bomb() -> bytes:
    """A page showing an image that declares 100000 × 100000 pixels."""
    pixels = zlib.compress(b"\0" * 4096)
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
            stream(b"q 612 0 0 792 0 0 cm /Im1 Do Q"),
            stream(
                pixels,
                b"/Type /XObject /Subtype /Image /Width 100000 /Height 100000 "
                b"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
            ),
        ]
    )


def javascript() -> bytes:
    doc = pymupdf.open(stream=valid_pdf("Click me."), filetype="pdf")
    doc.xref_set_key(doc.pdf_catalog(), "OpenAction", "<< /S /JavaScript /JS (app.alert(1)) >>")
    data = doc.tobytes()
    doc.close()
    return data


def launch_action() -> bytes:
    doc = pymupdf.open(stream=valid_pdf("Open me."), filetype="pdf")
    doc.xref_set_key(
        doc.pdf_catalog(), "OpenAction", "<< /S /Launch /F (/bin/sh) /NewWindow true >>"
    )
    data = doc.tobytes()
    doc.close()
    return data


def encrypted() -> bytes:
    doc = pymupdf.open(stream=valid_pdf("Secret."), filetype="pdf")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="owner")
    doc.close()
    return data


def not_a_pdf() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * 2048


def html_named_pdf() -> bytes:
    return b"<html><script>alert(1)</script></html>"


def zero_bytes() -> bytes:
    return b""


def no_pages() -> bytes:
    return raw_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def page_tree_loop() -> bytes:
    """A page tree whose node lists itself as a kid."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


HOSTILE: dict[str, Callable[[], bytes]] = {
    "zero_bytes": zero_bytes,
    "not_a_pdf": not_a_pdf,
    "html_named_pdf": html_named_pdf,
    "truncated": truncated,
    "huge_page_count": huge_page_count,
    "deep_nesting": deep_nesting,
    "deep_content_nesting": deep_content_nesting,
    "image_bomb": image_bomb,
    "javascript": javascript,
    "launch_action": launch_action,
    "encrypted": encrypted,
    "no_pages": no_pages,
    "page_tree_loop": page_tree_loop,
}
