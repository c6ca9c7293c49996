"""Fixtures for the ingest tests: real corpus files and synthetic trap PDFs.

The synthetic PDFs reproduce layout traps seen in real papers (a first page
that starts with the end of another article, a repository cover sheet, an
all-capitals title with a long byline and LaTeX-broken accents, a garbage text
layer) with invented text, so the rules are tested on documents they were not
tuned on.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from tests.conftest import CORPUS, corpus_manifest  # noqa: F401  (re-exported)

LOREM = (
    "The measurements were repeated on three independent samples and the results were "
    "averaged before the analysis. We observed that the response of the system depends on "
    "the temperature and on the history of the sample, which suggests that the relaxation "
    "is slower than expected from the simple model described in the previous section. "
)


def _wrap(page: pymupdf.Page, text: str, x: float, y: float, width: float, size: float,
          font: str = "helv", leading: float = 1.25) -> float:  # fmt: skip
    """Write ``text`` word-wrapped from (x, y); return the next baseline y."""
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if pymupdf.get_text_length(trial, fontname=font, fontsize=size) > width and line:
            page.insert_text((x, y), line, fontsize=size, fontname=font)
            y += size * leading
            line = word
        else:
            line = trial
    if line:
        page.insert_text((x, y), line, fontsize=size, fontname=font)
        y += size * leading
    return y


def _byline(page: pymupdf.Page, authors: list[tuple[str, str]], x: float, y: float,
            width: float, size: float = 11.0) -> float:  # fmt: skip
    """Authors with raised, smaller affiliation numbers, wrapped over lines."""
    cx = x
    for i, (name, sup) in enumerate(authors):
        sep = ", " if i < len(authors) - 2 else (" and " if i == len(authors) - 2 else "")
        need = pymupdf.get_text_length(name + sup + sep, fontname="helv", fontsize=size)
        if cx + need > x + width:
            cx = x
            y += size * 1.4
        page.insert_text((cx, y), name, fontsize=size, fontname="helv")
        cx += pymupdf.get_text_length(name, fontname="helv", fontsize=size)
        page.insert_text((cx, y - size * 0.35), sup, fontsize=size * 0.6, fontname="helv")
        cx += pymupdf.get_text_length(sup, fontname="helv", fontsize=size * 0.6)
        if sep:
            page.insert_text((cx, y), sep, fontsize=size, fontname="helv")
            cx += pymupdf.get_text_length(sep, fontname="helv", fontsize=size)
    return y + size * 1.6


def _footer(page: pymupdf.Page, text: str, size: float = 7.5) -> None:
    page.insert_text((56, page.rect.height - 30), text, fontsize=size, fontname="helv")


def _body_pages(doc: pymupdf.Document, n: int, header: str, footer: str) -> None:
    for k in range(n):
        page = doc.new_page(width=595, height=842)
        page.insert_text((56, 40), header, fontsize=8, fontname="helv")
        y = 80.0
        for _ in range(4):
            y = _wrap(page, LOREM * 2, 56, y, 480, 10) + 8
        _footer(page, footer.replace("#", str(k + 2)))


def make_tail_of_other_article(path: Path) -> dict:
    """Page 1 starts with the end of another article (its references carry foreign DOIs)."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text(
        (56, 40), "Journal of Synthetic Studies 12 (2020) 31-45", fontsize=8, fontname="helv"
    )
    y = _wrap(page, LOREM * 2, 56, 70, 480, 9.5)
    y = _wrap(page, "References", 56, y + 6, 480, 10, font="hebo")
    for i in range(4):
        ref = (f"[{i + 1}] Brown, T., Green, P. et al. Earlier findings on relaxation, part {i + 1}. "
               f"Phys. Lett. 1{i} (2011) 10{i}-11{i}. doi:10.1016/j.foreign.2011.0{i}.00{i}")  # fmt: skip
        y = _wrap(page, ref, 56, y, 480, 8)
    page.draw_line((56, y + 4), (540, y + 4))
    y += 34
    y = _wrap(page, "Slow relaxation of strained polymer films under cyclic heating",
              56, y, 480, 18, font="hebo", leading=1.2)  # fmt: skip
    y = _byline(
        page, [("Anna Kowalska", "1"), ("Jörg Müller", "2,*"), ("Wei Zhang", "1")], 56, y + 6, 480
    )
    y = _wrap(
        page, "1 Institute of Materials, University of Nowhere, Springfield, USA", 56, y, 480, 8
    )
    y = _wrap(
        page, "2 Department of Physics, Technical University of Elsewhere, Germany", 56, y, 480, 8
    )
    y = _wrap(page, "Received 2 March 2020; accepted 14 May 2020", 56, y + 4, 480, 8)
    y = _wrap(page, "Abstract", 56, y + 10, 480, 11, font="hebo")
    y = _wrap(
        page, "We report a slow relaxation of strained polymer films. " + LOREM, 56, y, 480, 9.5
    )
    _wrap(page, "Keywords: polymer films; relaxation; cyclic heating", 56, y + 4, 480, 9)
    _footer(page, "https://doi.org/10.5555/jss.2020.0042  (c) 2020 The Authors")
    _body_pages(doc, 2, "Kowalska et al. / Journal of Synthetic Studies 12 (2020) 31-45",
                "https://doi.org/10.5555/jss.2020.0042   page #")  # fmt: skip
    doc.save(path)
    return {
        "title": "Slow relaxation of strained polymer films under cyclic heating",
        "authors": ["Anna Kowalska", "Jörg Müller", "Wei Zhang"],
        "year": 2020,
        "doi": "10.5555/jss.2020.0042",
    }


def make_cover_sheet(path: Path) -> dict:
    """A repository cover page (with extra DOI-like strings) in front of the article."""
    doc = pymupdf.open()
    cover = doc.new_page(width=595, height=842)
    y = _wrap(cover, "Institutional Repository", 56, 80, 480, 20, font="hebo")
    y = _wrap(cover, "This is the accepted manuscript of an article. Citation for published "
              "version: Osei, K. and Lindqvist, M. Graph signatures for sparse sensor networks. "
              "Please cite the published version.", 56, y + 10, 480, 10)  # fmt: skip
    y = _wrap(cover, "Link to publication: https://repository.example.org/handle/10.99999/12345",
              56, y + 6, 480, 10)  # fmt: skip
    y = _wrap(cover, "Published version DOI: 10.4242/gssn.2017.318", 56, y + 6, 480, 10)
    y = _wrap(cover, "Downloaded from the repository on 05 January 2024", 56, y + 6, 480, 10)
    _wrap(cover, "General rights: copyright and moral rights are retained by the authors. "
          "Take down policy: contact us if you believe this document breaches copyright.",
          56, y + 6, 480, 9)  # fmt: skip
    page = doc.new_page(width=595, height=842)
    y = _wrap(page, "Graph signatures for sparse sensor networks", 56, 110, 480, 20,
              font="hebo", leading=1.2)  # fmt: skip
    y = _byline(page, [("Kwame Osei", "a"), ("Maja Lindqvist", "b")], 56, y + 8, 480)
    y = _wrap(page, "a School of Computing, Example University, Accra, Ghana", 56, y, 480, 8)
    y = _wrap(page, "Published online 12 September 2017", 56, y + 4, 480, 8)
    y = _wrap(page, "ABSTRACT", 56, y + 12, 480, 11, font="hebo")
    _wrap(page, "Sparse sensor networks need compact summaries. " + LOREM, 56, y, 480, 9.5)
    _footer(page, "Sensor Systems Letters 4 (2017) 318-330   doi:10.4242/gssn.2017.318")
    _body_pages(
        doc,
        2,
        "Osei and Lindqvist",
        "Sensor Systems Letters 4 (2017)   doi:10.4242/gssn.2017.318   #",
    )
    doc.save(path)
    return {
        "title": "Graph signatures for sparse sensor networks",
        "authors": ["Kwame Osei", "Maja Lindqvist"],
        "year": 2017,
        "doi": "10.4242/gssn.2017.318",
    }


LONG_BYLINE = [
    "Ste\u00b4phane Durand", "Jo\u00a8rg Vogel", "Maria Rossi", "Kenji Sato", "Olga Petrova",
    "Pedro Alvarez", "Liam O'Brien", "Chen Wei", "Amara Okafor", "Lucas Martin", "Sofia Berg",
    "Ivan Horvat", "Nina Kovac", "Omar Haddad", "Elena Popescu", "Jan Novak", "Aisha Bello",
    "Tomasz Nowak", "Hana Suzuki", "Diego Castro", "Freya Lund", "Marco Bianchi", "Sara Cohen",
    "Viktor Ilyin", "Ana Silva", "Jonas Weber", "Leila Ahmadi", "Paul Dubois", "Rita Kaur",
    "Emil Strand", "Yara Nasser", "Hugo Lambert", "Mei Lin", "Arjun Rao", "Clara Hoffmann",
]  # fmt: skip


def make_caps_long_byline(path: Path) -> dict:
    """ALL-CAPS title, a 35-author byline with broken accents, no DOI anywhere."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    y = _wrap(page, "PROCEEDINGS OF THE WORKSHOP ON DETECTOR SYSTEMS", 56, 40, 480, 7)
    y = _wrap(page, "A COMPACT TIMING DETECTOR FOR HIGH-RATE PARTICLE TRACKING", 56, y + 50, 480,
              16, font="hebo", leading=1.2)  # fmt: skip
    authors = [(name, str(i % 5 + 1)) for i, name in enumerate(LONG_BYLINE)]
    y = _byline(page, authors, 56, y + 8, 480, size=10)
    y = _wrap(
        page, "1 Laboratory for Detector Physics, North University, Oslo, Norway", 56, y, 480, 7.5
    )
    y = _wrap(page, "Received 3 March 2019; accepted 1 June 2019", 56, y + 4, 480, 7.5)
    y = _wrap(page, "Abstract", 56, y + 12, 480, 10, font="hebo")
    _wrap(page, "We present a compact timing detector. " + LOREM, 56, y, 480, 9.5)
    _body_pages(doc, 2, "A compact timing detector", "#")
    doc.save(path)
    names = [
        n.replace("Ste\u00b4phane", "Stéphane").replace("Jo\u00a8rg", "Jörg") for n in LONG_BYLINE
    ]
    return {
        "title": "A Compact Timing Detector for High-Rate Particle Tracking",
        "authors": names,
        "year": 2019,
        "doi": None,
    }


def _shift(text: str, k: int = 3) -> str:
    out = []
    for c in text:
        if "a" <= c <= "z":
            out.append(chr((ord(c) - 97 + k) % 26 + 97))
        elif "A" <= c <= "Z":
            out.append(chr((ord(c) - 65 + k) % 26 + 65))
        else:
            out.append(c)
    return "".join(out)


def make_garbage_text_layer(src: pymupdf.Page, path: Path) -> None:
    """The page as an image with an invisible, letter-shifted text layer on top."""
    doc = pymupdf.open()
    page = doc.new_page(width=src.rect.width, height=src.rect.height)
    page.insert_image(page.rect, pixmap=src.get_pixmap(dpi=150))
    tw = pymupdf.TextWriter(page.rect)
    for block in src.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            for span in line["spans"]:
                if span["text"].strip():
                    tw.append(span["origin"], _shift(span["text"]), fontsize=span["size"])
    tw.write_text(page, render_mode=3)  # invisible, like a bad OCR/encoding layer
    doc.save(path)


KOREAN_ABSTRACT = [
    "본 연구는 기후 변화가 고산 지역 식물의 성장에 미치는 영향을 분석하였다.",
    "세 종의 식물을 대상으로 두 계절 동안 높이와 생물량을 측정하였다.",
    "평균 기온이 10도를 넘을 때 성장 속도가 빨라지는 것을 확인하였다.",
    "그러나 전체 생물량에는 유의미한 차이가 없었다.",
]


def make_korean_paper(path: Path) -> dict:
    """A Korean first page: Hangul title and byline, 초록 and 주제어 sections."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    font = "korea"  # MuPDF's built-in CJK font
    page.insert_text(
        (56, 60), "한국기후학회지 제12권 제3호 (2021년 9월)", fontsize=8, fontname=font
    )
    title = "고산 지역 식물 성장에 대한 기후 변화의 영향 분석"
    page.insert_text((56, 120), title, fontsize=18, fontname=font)
    page.insert_text((56, 150), "홍길동, 김철수, 이영희", fontsize=11, fontname=font)
    page.insert_text((56, 168), "서울대학교 환경대학원", fontsize=8, fontname=font)
    page.insert_text((56, 200), "초록", fontsize=11, fontname=font)
    y = 218.0
    for sentence in KOREAN_ABSTRACT:
        page.insert_text((56, y), sentence, fontsize=9.5, fontname=font)
        y += 14
    page.insert_text(
        (56, y + 10), "주제어: 기후 변화, 고산 식물, 생물량", fontsize=9, fontname=font
    )
    doc.save(path)
    return {
        "title": title,
        "authors": ["홍길동", "김철수", "이영희"],
        "year": 2021,
        "doi": None,
        "keywords": ["기후 변화", "고산 식물", "생물량"],
    }


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


# Filled by test_metadata_corpus.py, printed at the end of the run (shown by a
# plain `pytest` run, with -rA and with -s).
CORPUS_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if CORPUS_REPORT:
        terminalreporter.section("ingest: metadata extraction on the dev corpus")
        for line in CORPUS_REPORT:
            terminalreporter.write_line(line)
