"""Bibliographic metadata from a PDF: title, authors, year, journal, DOI, arXiv id,
abstract and keywords.

No single source is reliable. The info dictionary and XMP are often junk
(template names, file names) or missing; the printed first page is the truth
but has to be read from layout. So every field collects candidates from all
sources, weighs them with general signals (font size, position, labels,
repetition in running headers/footers, agreement between sources) and keeps
the best, recording where it came from in ``sources``.

The rules are deliberately generic: nothing here knows a publisher, a journal
or a file.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import html
import logging
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pymupdf

from .extract import TEXT_FLAGS, PageText, clean_text, repair_accents
from .quality import score_text

__all__ = ["ExtractedMetadata", "extract_metadata", "normalize_doi", "DOI_RE"]

log = logging.getLogger(__name__)


@dataclass
class ExtractedMetadata:
    """Metadata found in a PDF; ``sources`` maps each found field to its origin."""

    title: str | None = None
    authors: list[str] = field(default_factory=list)
    year: int | None = None
    journal: str | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    abstract: str | None = None
    keywords: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Lines: the unit everything below works on
# ---------------------------------------------------------------------------

_SUPERSCRIPT = 1
_BOLD = 16


@dataclass
class _Line:
    page: int  # 0-based
    block: int
    text: str  # full text, cleaned (ligatures, accents)
    plain: str  # text with superscript spans replaced by " , "
    size: float
    bold: bool
    x0: float
    y0: float
    x1: float
    y1: float
    horizontal: bool
    base: float = 0.0  # baseline y of the line's main text

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class _Page:
    index: int
    width: float
    height: float
    lines: list[_Line]
    body_size: float
    trusted: bool  # layout and text are usable (good text layer or OCR layout)
    text: str  # page text with line breaks (blank line between blocks)
    ocr: bool = False  # geometry from OCR: font sizes are estimates


_LIG = str.maketrans(
    {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
)


def _norm_line(text: str) -> str:
    text = text.translate(_LIG).replace("\u00a0", " ").replace("\u00ad", "")
    # "c⃝" / "C⃝": a copyright sign drawn as a letter in a combining circle.
    text = re.sub(r"[cC]\s?\u20dd", "©", text)
    text = repair_accents(text)
    return re.sub(r"\s+", " ", text).strip()


def _lines_from_dict(info: dict[str, Any], index: int, ocr: bool) -> list[_Line]:
    lines: list[_Line] = []
    for bno, b in enumerate(info.get("blocks", [])):
        if b.get("type") != 0:
            continue
        for ln in b.get("lines", []):
            spans = [s for s in ln.get("spans", []) if s.get("text")]
            if not spans:
                continue
            sizes: Counter[float] = Counter()
            for s in spans:
                n = len(s["text"].strip())
                if n:
                    sizes[round(s["size"], 1)] += n
            if not sizes:
                continue
            if ocr:  # OCR word heights are noisy: the median is steadier
                size = statistics.median(s["size"] for s in spans if s["text"].strip())
            else:
                size = sizes.most_common(1)[0][0]
            lb = ln["bbox"]
            full, plain = [], []
            bold_chars = total = 0
            for s in spans:
                t = s["text"]
                full.append(t)
                raised = s["bbox"][3] < lb[3] - 0.15 * size
                smaller = s["size"] < 0.9 * size
                sup = smaller and (
                    (s["flags"] & _SUPERSCRIPT) or (s["size"] < 0.8 * size and raised)
                )
                plain.append(" , " if sup and not ocr else t)
                n = len(t.strip())
                total += n
                if s["flags"] & _BOLD or "bold" in s.get("font", "").lower():
                    bold_chars += n
            dx, dy = ln.get("dir", (1, 0))
            main = [sp for sp in spans if abs(sp["size"] - size) < 0.5 and "origin" in sp]
            base = max((sp["origin"][1] for sp in main), default=lb[3])
            text = _norm_line("".join(full))
            if not text:
                continue
            lines.append(
                _Line(
                    page=index,
                    block=bno,
                    text=text,
                    plain=_norm_line("".join(plain)),
                    size=float(size),
                    bold=total > 0 and bold_chars / total > 0.6,
                    x0=lb[0],
                    y0=lb[1],
                    x1=lb[2],
                    y1=lb[3],
                    horizontal=abs(dy) < 0.2 and dx > 0,
                    base=base,
                )
            )
    return lines


def _body_size(lines: list[_Line]) -> float:
    c: Counter[float] = Counter()
    for ln in lines:
        c[round(ln.size * 2) / 2] += len(ln.text)
    return c.most_common(1)[0][0] if c else 10.0


def _page_text(lines: list[_Line]) -> str:
    out: list[str] = []
    prev_block = None
    for ln in lines:
        if prev_block is not None and ln.block != prev_block:
            out.append("")
        out.append(ln.text)
        prev_block = ln.block
    return "\n".join(out)


def _load_page(doc: pymupdf.Document, index: int, pages: list[PageText]) -> _Page:
    pt = pages[index] if index < len(pages) else None
    page = doc.load_page(index)
    width, height = page.rect.width, page.rect.height
    if pt is not None and pt.source == "ocr":
        if pt.ocr_layout is not None:
            lines = _lines_from_dict(pt.ocr_layout, index, ocr=True)
            trusted = True
        else:  # OCR text without geometry: paragraphs as pseudo-lines
            lines = []
            for bno, para in enumerate(pt.text.split("\n\n")):
                lines.append(
                    _Line(
                        index, bno, _norm_line(para), _norm_line(para), 0.0, False, 0, 0, 0, 0, True
                    )  # fmt: skip
                )
            trusted = False
    else:
        try:
            info = page.get_text("dict", flags=TEXT_FLAGS)
        except Exception:
            info = {"blocks": []}
        lines = _lines_from_dict(info, index, ocr=False)
        quality = pt.quality if pt is not None else score_text(_page_text(lines))
        trusted = quality >= 0.35
    ocr = pt is not None and pt.source == "ocr"
    return _Page(index, width, height, lines, _body_size(lines), trusted, _page_text(lines), ocr)


# ---------------------------------------------------------------------------
# Info dictionary and XMP
# ---------------------------------------------------------------------------


def _xmp_values(xmp: str, tag: str) -> list[str]:
    """All values of an XMP property (attribute form, simple element or rdf:li list)."""
    if not xmp:
        return []
    out: list[str] = []
    for m in re.finditer(rf'{tag}\s*=\s*"([^"]*)"', xmp):
        out.append(m.group(1))
    for m in re.finditer(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", xmp, re.S):
        inner = m.group(1)
        items = re.findall(r"<rdf:li(?:\s[^>]*)?>(.*?)</rdf:li>", inner, re.S)
        out.extend(items if items else [inner])
    cleaned = []
    for v in out:
        v = html.unescape(re.sub(r"<[^>]+>", "", v))
        v = re.sub(r"\s+", " ", v).strip()
        if v:
            cleaned.append(v)
    return cleaned


_JUNK_TITLE_RE = re.compile(
    r"^(?:microsoft\s+\w+\s*-|untitled|title|template|proceedings\s+template|document\d*|"
    r"manuscript|paper|draft|slide|presentation|doi:|pii:|none|null|unknown|"
    r"word\s+template|latex|article|main|full\s*text)\b",
    re.I,
)


def _plausible_title(t: str | None) -> bool:
    """Reject the junk that fills info/XMP titles: file names, templates, ids."""
    if not t:
        return False
    t = t.strip()
    if len(t) < 8 or len(t.split()) < 2 or len(t) > 400:
        return False
    if _JUNK_TITLE_RE.match(t):
        return False
    if re.search(r"\.(?:docx?|pdf|tex|dvi|ps|indd|qxd|rtf|odt|wpd|eps)\b", t, re.I):
        return False
    if re.search(r"\d+\s?\.\.\s?\d+", t):  # "1..23" page-range artefacts
        return False
    if re.search(r"[A-Za-z]?\d{6,}", t) or "_" in t or "\\" in t:
        return False
    if re.search(r"[/\\][\w.-]+[/\\]", t):  # paths
        return False
    letters = sum(c.isalpha() for c in t)
    return letters / max(1, len(t.replace(" ", ""))) >= 0.6


def _norm_key(text: str) -> str:
    """Lowercase alphanumerics only, accents stripped: for fuzzy comparisons."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text.lower() if c.isalnum())


def _similar(a: str, b: str) -> float:
    ka, kb = _norm_key(a), _norm_key(b)
    if not ka or not kb:
        return 0.0
    return difflib.SequenceMatcher(None, ka, kb, autojunk=False).ratio()


def _words_found(candidate: str, haystack_key_words: set[str]) -> float:
    words = [_norm_key(w) for w in candidate.split()]
    words = [w for w in words if len(w) > 2]
    if not words:
        return 0.0
    return sum(1 for w in words if w in haystack_key_words) / len(words)


# ---------------------------------------------------------------------------
# Running headers / footers, cover sheets
# ---------------------------------------------------------------------------

_HF_ZONE = 0.10  # top/bottom share of the page height


def _in_hf_zone(ln: _Line, page: _Page) -> bool:
    return ln.y0 <= page.height * _HF_ZONE or ln.y1 >= page.height * (1 - _HF_ZONE)


def _hf_key(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower()).strip()


def _running_lines(pages: list[_Page]) -> Counter[str]:
    """Header/footer texts repeated on several pages (running heads, journal lines)."""
    c: Counter[str] = Counter()
    for p in pages[1:]:
        seen = set()
        for ln in p.lines:
            if ln.horizontal and _in_hf_zone(ln, p):
                seen.add(_hf_key(ln.text))
        c.update(seen)
    return Counter({k: v for k, v in c.items() if v >= 2})


_COVER_CUES = (
    r"this is an? (?:pre-?print|post-?print|author|accepted|electronic|digital)",
    r"accepted (?:author )?manuscript",
    r"author'?s? (?:accepted |final )?(?:version|manuscript)",
    r"downloaded from",
    r"please cite",
    r"to cite this (?:article|version|paper)",
    r"citation for (?:the )?published version",
    r"link to (?:this )?(?:article|publication)",
    r"terms of use",
    r"general rights",
    r"take ?down policy",
    r"repository",
    r"this version is available",
    r"copyright and moral rights",
    r"full terms (?:&|and) conditions",
    r"submit your article",
    r"view related articles",
    r"view crossmark data",
    r"published version",
    r"cover (?:page|sheet)",
    r"document version",
    r"published in:",
    r"terms (?:and|&) conditions",
    r"\baccessed\s*:",
    r"stable url",
    r"for personal use only",
)
_COVER_RE = re.compile("|".join(_COVER_CUES), re.I)


def _is_cover_sheet(p: _Page, n_pages: int) -> bool:
    """A repository/publisher cover page in front of the article."""
    if n_pages < 2:
        return False
    cues = {m.group(0).lower() for m in _COVER_RE.finditer(p.text)}
    words = len(p.text.split())
    return len(cues) >= 3 or (len(cues) >= 2 and words < 400)


# ---------------------------------------------------------------------------
# DOI and arXiv id
# ---------------------------------------------------------------------------

DOI_RE = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>{}|\\^`]+)", re.I)
_DOI_LABEL_RE = re.compile(r"(?:doi|DOI)\s*[:.]?\s*$|doi\.org/\s*$|dx\.doi\.org/\s*$", re.I)
_ARXIV_RE = re.compile(
    r"ar[Xx]iv\s*:\s*((?:\d{4}\.\d{4,5})|(?:[a-z][a-z.-]+/\d{7}))(v\d+)?"
    r"|arxiv\.org/(?:abs|pdf)/((?:\d{4}\.\d{4,5})|(?:[a-z][a-z.-]+/\d{7}))(v\d+)?",
    re.I,
)


def normalize_doi(doi: str) -> str | None:
    """Strip URL prefixes and trailing punctuation; None if not a DOI."""
    doi = doi.strip()
    doi = re.sub(r"^(?:https?://)?(?:dx\.)?doi\.org/", "", doi, flags=re.I)
    doi = re.sub(r"^doi\s*:\s*", "", doi, flags=re.I)
    m = DOI_RE.match(doi)
    if not m:
        return None
    doi = m.group(1)
    while doi:
        last = doi[-1]
        unbalanced = last in ")]}" and doi.count({")": "(", "]": "[", "}": "{"}[last]) < doi.count(
            last
        )
        if last not in ".,;:'\"’”" and not unbalanced:
            break
        doi = doi[:-1]
    if not re.match(r"10\.\d{4,9}/\S+", doi):
        return None
    return doi


_REF_LINE_RE = re.compile(
    r"^\s*(?:\[\d+\]|\d{1,3}\.\s+[A-Z]|\(\d+\))|\bet al\b|\b(?:19|20)\d{2}[a-z]?\)?[;,:]\s*\d+",
    re.I,
)
_REFERENCES_HEADING_RE = re.compile(
    r"^\s*(?:references|bibliography|literature cited|works cited)\s*$", re.I
)


@dataclass
class _DoiCand:
    doi: str
    score: float = 0.0
    why: set[str] = field(default_factory=set)


_DATA_DOI_RE = re.compile(
    r"\b(?:data(?:set)?s?|deposited|available (?:at|from)|repository|supplement\w*|"
    r"software|code|archived)\b",
    re.I,
)


def _collect_dois(
    pages: list[_Page],
    first: int,
    title_line: _Line | None,
    xmp: str,
    info: dict[str, str],
    tail_mode: bool = False,
    front_y: float | None = None,
    running: bool = True,
) -> dict[str, _DoiCand]:
    """Score every DOI seen; the article's own DOI is labelled, in a header/footer,
    near the title, repeated on later pages or in the XMP; cited and data DOIs are not."""
    cands: dict[str, _DoiCand] = {}

    def add(raw: str, score: float, why: str) -> None:
        doi = normalize_doi(raw)
        if not doi:
            return
        key = doi.lower()
        c = cands.setdefault(key, _DoiCand(doi))
        c.score += score
        c.why.add(why)

    for tag in ("prism:doi", "pdfx:doi", "crossmark:DOI", "pdfx:DOI", "prism:DOI"):
        for v in _xmp_values(xmp, tag):
            add(v, 6.0, "xmp")
    for v in _xmp_values(xmp, "dc:identifier"):
        add(v, 4.0, "xmp")
    for key in ("subject", "keywords", "title"):
        for m in DOI_RE.finditer(info.get(key) or ""):
            add(m.group(1), 3.0, "pdf_info")

    fp = pages[first]
    if front_y is None:
        front_y = fp.height * 0.3
    after_refs = False
    for i, ln in enumerate(fp.lines):
        if _REFERENCES_HEADING_RE.match(ln.text):
            after_refs = True
        text = ln.text
        if re.search(r"10\.\d{4,9}/\S*[./-]$", text) and i + 1 < len(fp.lines):
            nxt = fp.lines[i + 1].text
            if re.match(r"[a-z0-9]", nxt):
                text = text + nxt.split(" ", 1)[0]
        for m in DOI_RE.finditer(text):
            before = text[: m.start()]
            s = 1.0
            if _DOI_LABEL_RE.search(before):
                s += 1.0
            if _in_hf_zone(ln, fp):
                s += 2.5
            elif ln.y0 < front_y:
                s += 1.5  # front matter (title block, banner)
            if tail_mode and title_line is not None and ln.y1 < title_line.y0:
                s -= 5.0  # the end of another article printed above this title
            if _REF_LINE_RE.search(text) or after_refs:
                s -= 3.0
            if _DATA_DOI_RE.search(before[-60:]):
                s -= 2.0
            add(m.group(1), s, "page")
    # Repetition in headers/footers of the following pages is the strongest sign.
    per_page: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    for p in pages[first + 1 :] if running else []:
        seen = set()
        for ln in p.lines:
            if not _in_hf_zone(ln, p) or _REF_LINE_RE.search(ln.text):
                continue
            for m in DOI_RE.finditer(ln.text):
                doi = normalize_doi(m.group(1))
                if doi:
                    seen.add(doi.lower())
                    spelled[doi.lower()] = doi
        per_page.update(seen)
    for key, count in per_page.items():
        if count >= 2:
            add(spelled[key], 2.0 * count, "running")

    # Figure/supplement DOIs extend the article DOI ("...0194893.g001"): fold them.
    keys = sorted(cands, key=len)
    for k in keys:
        for base in keys:
            if base == k or k not in cands or base not in cands or not k.startswith(base):
                continue
            suffix = k[len(base) :]
            if re.fullmatch(r"[./-][a-z]{0,6}-?\d{1,4}", suffix):
                cands[base].score += min(1.0, max(0.0, cands[k].score))
                del cands[k]
                break
    return cands


def _find_arxiv(pages: list[_Page], xmp: str, info: dict[str, str]) -> tuple[str | None, str]:
    scores: dict[str, float] = defaultdict(float)
    for src in [xmp] + [info.get(k) or "" for k in ("subject", "keywords", "title")]:
        for m in _ARXIV_RE.finditer(src):
            scores[(m.group(1) or m.group(3))] += 3
    for p in pages[:2]:
        for ln in p.lines:
            for m in _ARXIV_RE.finditer(ln.text):
                aid = m.group(1) or m.group(3)
                # A bare mention may be a citation; the paper's own id sits in the
                # margin stamp, carries a subject class, or is in a header/footer.
                s = 0.5
                if not ln.horizontal:
                    s += 3.0
                if re.search(r"\[[a-z-]+(?:\.[A-Za-z-]+)?\]", ln.text[m.end() : m.end() + 20]):
                    s += 2.0
                if _in_hf_zone(ln, p):
                    s += 1.5
                if re.search(r"preprint|submitted|e-?print", ln.text, re.I):
                    s += 1.0
                if _REF_LINE_RE.search(ln.text):
                    s -= 2.0
                scores[aid] += s
    if not scores:
        return None, ""
    best, s = max(scores.items(), key=lambda kv: kv[1])
    return (best, "pattern:arxiv") if s >= 2.0 else (None, "")


# ---------------------------------------------------------------------------
# Title
# ---------------------------------------------------------------------------

_LABELS = {
    "research article", "original article", "article", "review", "review article", "letter",
    "open access", "research paper", "short communication", "brief report", "editorial",
    "commentary", "perspective", "technical note", "case report", "original research",
    "full paper", "communication", "research", "report", "preprint", "accepted manuscript",
    "author manuscript", "abstract", "introduction", "contents", "keywords", "highlights",
    "graphical abstract", "article info", "article information", "research letter",
    "systematic review", "mini review", "minireview", "opinion", "short paper", "full length article",
    "regular article", "original paper", "methods", "methodology", "data descriptor",
    "conference paper", "proceedings", "supplementary material", "erratum", "correction",
}  # fmt: skip
_NOT_TITLE_RE = re.compile(
    r"(?:\bdoi\b|10\.\d{4,9}/|https?://|www\.|@|©|\bcopyright\b|\barxiv:|\bissn\b|\bisbn\b|"
    r"\bvol(?:ume)?\.?\s*\d|\bissue\b|\bpp\.\s*\d|\bpages?\s+\d+\s*(?:of|–|-)|"
    r"\bdownloaded\b|\bavailable online\b|\bcontents lists\b|\bhomepage\b|\bjournal homepage\b|"
    r"\breceived\b.*\d{4}|\baccepted\b.*\d{4}|\bpublished\b.*\d{4}|\bcorrespond)",
    re.I,
)
_SMALL_WORDS = {
    "a", "an", "the", "and", "or", "but", "nor", "of", "in", "on", "at", "to", "for", "by",
    "with", "from", "into", "onto", "via", "vs", "as", "per", "over", "under", "upon",
}  # fmt: skip


def _smart_title_case(title: str) -> str:
    """Title-case an ALL-CAPS title, keeping acronym-like tokens (LCLS-II, 3.9, GHz)."""
    out = []
    for i, word in enumerate(title.split()):
        parts = re.split(r"([-/])", word)
        new_parts = []
        for part in parts:
            letters = [c for c in part if c.isalpha()]
            if (
                not letters
                or any(c.isdigit() for c in part)
                or not all(c.isupper() for c in letters)
            ):
                new_parts.append(part)  # mixed case or numbers: leave
                continue
            core = "".join(letters)
            roman = re.fullmatch(r"[IVXLC]+", core) is not None and len(core) <= 4
            no_vowel = not any(c in "AEIOUY" for c in core)
            if roman or (no_vowel and len(core) >= 2):
                new_parts.append(part)
            elif i > 0 and part.lower() in _SMALL_WORDS:
                new_parts.append(part.lower())
            else:
                new_parts.append(part[:1] + part[1:].lower())
        out.append("".join(new_parts))
    return " ".join(out)


def _is_mostly_upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 6 and sum(c.isupper() for c in letters) / len(letters) > 0.85


def _strip_title(text: str) -> str:
    text = re.sub(r"\s*[*∗†‡§¶#✉⁎]+\s*$", "", text)
    text = re.sub(r"\s+([,.:;])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip(" .,;:")


def _join_lines(lines: list[_Line], attr: str = "text") -> str:
    raw = "\n".join(getattr(ln, attr) for ln in lines)
    return clean_text(raw).replace("\n\n", " ")


@dataclass
class _TitleCand:
    lines: list[_Line]
    text: str
    score: float
    size_ratio: float


def _group_lines(lines: list[_Line], ocr: bool = False) -> list[list[_Line]]:
    """Group lines of the same style that follow each other vertically (one visual block).

    OCR font sizes are estimates from word heights, so OCR lines get a wider
    size tolerance, and words on one baseline are joined whatever their size.
    """
    size_tol = 0.2 if ocr else 0.06
    groups: list[list[_Line]] = []
    for ln in sorted(lines, key=lambda x: (round(x.base, 1), x.x0)):
        placed = False
        for g in reversed(groups[-6:]):
            last = g[-1]
            pitch = ln.base - last.base
            size = max(ln.size, last.size)
            same_row = abs(pitch) < 0.3 * size and -2 <= ln.x0 - last.x1 < 1.5 * size
            same_style = (
                abs(last.size - ln.size) <= size_tol * ln.size + 0.3 and last.bold == ln.bold
            )
            if not same_style and not (ocr and same_row):
                continue
            next_row = 0.7 * ln.size <= pitch <= 2.1 * ln.size and (
                min(last.x1, ln.x1) > max(last.x0, ln.x0) - 2
            )
            if same_row or next_row:
                g.append(ln)
                placed = True
                break
        if not placed:
            groups.append([ln])
    return groups


def _title_candidates(
    p: _Page, running: Counter[str], journal_hint: str | None
) -> list[_TitleCand]:
    if not p.trusted or not p.lines:
        return []
    lines = [ln for ln in p.lines if ln.horizontal and ln.y0 < p.height * 0.75]
    out = []
    for g in _group_lines(lines, p.ocr):
        size = statistics.median(ln.size for ln in g)
        ratio = size / p.body_size if p.body_size else 1.0
        text = _strip_title(_join_lines(g, "plain").replace(" , ", " "))
        text = re.sub(r"\s*,\s*$", "", text)
        words = text.split()
        if len(words) < 2 or len(text) < 8 or len(words) > 60:
            continue
        low = re.sub(r"[^a-z ]", "", text.lower()).strip()
        if low in _LABELS or re.sub(r"\s", "", low) in {x.replace(" ", "") for x in _LABELS}:
            continue
        if _NOT_TITLE_RE.search(text):
            continue
        letters = sum(c.isalpha() for c in text)
        if letters / max(1, len(text.replace(" ", ""))) < 0.55:
            continue
        top = g[0]
        if _hf_key(top.text) in running and ratio < 1.15:
            continue
        if journal_hint and _similar(text, journal_hint) > 0.85:
            continue
        if score_text(text) < 0.15 and len(words) >= 4:
            continue  # garbage glyphs even though the page passed
        score = ratio * 10.0
        score -= (top.y0 / p.height) * 4.0
        if top.bold:
            score += 0.5
        if len(words) < 3:
            score -= 4.0
        if len(words) > 30:
            score -= 3.0
        if len(g) > 5:
            score -= 3.0
        if _is_mostly_upper(text) and len(words) <= 3:
            score -= 3.0
        if _in_hf_zone(top, p) and ratio < 1.3:
            score -= 5.0
        if text.rstrip().endswith(".") and len(words) > 12:
            score -= 2.0  # a sentence, not a title
        if (
            re.match(
                r"^(?:the\s+)?(?:journal|proceedings|transactions|annals|bulletin)\s+(?:of|on|in)\b",
                text,
                re.I,
            )
            and top.y0 < p.height * 0.2
        ):
            score -= 6.0  # journal banner
        out.append(_TitleCand(g, text, score, ratio))
    out.sort(key=lambda c: c.score, reverse=True)
    return out


# ---------------------------------------------------------------------------
# Authors
# ---------------------------------------------------------------------------

_PARTICLES = {
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le",
    "bin", "ibn", "al", "el", "ten", "ter", "y", "zu", "vom", "st", "mac", "af", "av",
}  # fmt: skip
_AFFIL_WORDS = {
    "university", "universität", "universitat", "université", "universite", "universidad",
    "università", "universiteit", "universidade", "univ", "institute", "institut", "instituto",
    "istituto", "department", "departamento", "dept", "faculty", "school", "college",
    "laboratory", "laboratories", "lab", "labs", "center", "centre", "centro", "hospital",
    "clinic", "inc", "ltd", "llc", "gmbh", "corporation", "corp", "company", "group", "division",
    "unit", "program", "programme", "ministry", "agency", "council", "society", "academy",
    "foundation", "museum", "observatory", "station", "research", "sciences", "science",
    "technology", "technologies", "engineering", "national", "international", "federal",
    "street", "road", "avenue", "blvd", "building", "campus", "box", "floor", "city", "state",
    "china", "usa", "uk", "germany", "france", "italy", "spain", "japan", "korea", "india",
    "canada", "australia", "brazil", "netherlands", "switzerland", "sweden", "norway",
    "denmark", "finland", "austria", "belgium", "poland", "russia", "ireland", "israel",
    "singapore", "taiwan", "mexico", "portugal", "greece", "turkey", "iran", "egypt", "africa",
    "america", "kingdom", "republic", "zealand", "chile", "argentina", "colombia", "pakistan",
    "east", "west", "north", "south", "new", "email", "e-mail", "mail", "correspondence",
    "abstract", "keywords", "introduction", "received", "accepted", "published", "orcid",
    "editor", "editors", "journal", "proceedings", "conference", "press", "publishing", "hall",
    "medical", "medicine", "biology", "chemistry", "physics", "mathematics", "studies",
    "systems", "software", "computer", "computing", "analysis", "data", "evaluation", "design",
    "model", "models", "learning", "network", "networks", "based", "using", "study", "review",
}  # fmt: skip
_DEGREES = {"phd", "ph.d", "md", "msc", "bsc", "ma", "mba", "dphil", "dr", "prof", "frs", "mph"}
_NAME_TOKEN_RE = re.compile(
    r"^(?:[A-Z\u00c0-\u00de\u0100-\u024f][\w'’\u00c0-\u024f.-]*|[A-Z]\.(?:-?[A-Z]\.)*)$"
)
_INITIALS_RE = re.compile(r"^(?:[A-Z\u00c0-\u00de]\.?-?)+$")
_HANGUL_NAME_RE = re.compile(r"^[\uac00-\ud7a3]{2,5}$")
_CJK_NAME_RE = re.compile(r"^[\u4e00-\u9fff]{2,4}$")
_COLLAB_RE = re.compile(
    r"^(?:for\s+|on behalf of\s+)?(?:the\s+)?(.+?)\s+(collaborations?|consortium|consortia|"
    r"working group|study group|investigators)\b",
    re.I,
)
_AUTHOR_STOP_RE = re.compile(
    r"^\s*(?:a\s?b\s?s\s?t\s?r\s?a\s?c\s?t|summary|keywords?|key\s+words|index terms|"
    r"(?:\d+\.?|i\.)\s*introduction|introduction|background|article info|a r t i c l e|"
    r"(?:국문\s?)?초\s?록|요\s?약|주제어|핵심어|키워드|(?:\d+\.?|i\.)?\s*서\s?론)\b",
    re.I,
)


def _fix_case(name: str) -> str:
    """'Ross G. DOUGLAS' -> 'Ross G. Douglas' (all-caps words become title case)."""
    toks = []
    for t in name.split():
        letters = [c for c in t if c.isalpha()]
        if len(letters) >= 2 and all(c.isupper() for c in letters) and "." not in t:
            if re.fullmatch(r"[IVX]+", t) and len(t) <= 3:
                toks.append(t)
            else:
                toks.append("-".join(p[:1] + p[1:].lower() for p in t.split("-")))
        else:
            toks.append(t)
    return " ".join(toks)


def _clean_name_segment(seg: str) -> str:
    seg = re.sub(r"\S+@\S+", " ", seg)
    # markers glued to a name, incl. OCR renderings of superscripts: "Bastien'*", "Moulia®"
    seg = re.sub(r"(?<=[^\W\d_])(?:[^\w\s.,\-]|\d)+(?=[\s,]|$)", " ", seg)
    seg = re.sub(r"\([^)]*\)", " ", seg)
    seg = re.sub(r"[*∗†‡§¶#✉⁎☯•·‖‡♯♭⊥⊗\u2020\u2021\u00a7\u00b6\u2016]", " ", seg)
    # affiliation numbers/letters glued to a name: "Smith1", "Smith1,2", "1Smith"
    seg = re.sub(r"(?<=[^\W\d_])\d+[a-z]?\b", " ", seg)
    seg = re.sub(r"^\s*\d{1,2}(?=[^\W\d_])", " ", seg)
    seg = re.sub(r"^\s*(?:\d{1,2}|[a-z])\s*$", " ", seg)
    # affiliation letters left after the name when superscripts were not marked: "Smith a"
    seg = re.sub(r"(?<=[^\W\d_]{2})\s+[a-z](?:\s*[a-z])?\s*$", " ", seg)
    seg = re.sub(r"\s+", " ", seg).strip(" .,;:-–")
    if seg and seg[-1].isalpha() and re.search(r"\b[A-Z]$", seg) and len(seg.split()) == 1:
        seg += "."
    return seg


def _is_name(seg: str) -> bool:
    toks = seg.split()
    if not toks:
        return False
    if len(toks) == 1:
        return bool(_HANGUL_NAME_RE.match(toks[0]) or _CJK_NAME_RE.match(toks[0]))
    if len(toks) > 6:
        return False
    if any(c.isdigit() for c in seg):
        return False
    content = 0
    for i, t in enumerate(toks):
        lt = t.lower().strip(".,")
        if lt in _AFFIL_WORDS or lt in _DEGREES and i == len(toks) - 1:
            return False
        if lt in _PARTICLES and 0 < i < len(toks) - 1:
            continue
        if lt in ("jr", "sr", "ii", "iii", "iv") and i == len(toks) - 1:
            continue
        if not _NAME_TOKEN_RE.match(t):
            return False
        if not _INITIALS_RE.match(t.replace(".", ".")) or len(t.strip(".")) >= 3:
            letters = [c for c in t if c.isalpha()]
            if len(letters) >= 2:
                content += 1
    if content == 0:
        return False
    last = toks[-1]
    return not (len(last.strip(".")) == 1 and len(toks) == 2 and toks[0].endswith("."))


def _split_names(text: str) -> tuple[list[str], int]:
    """Names on an author line and the number of comma-separated segments it had."""
    collab = _collaborations(text)
    if collab is not None:
        return collab, len(collab)
    text = re.sub(r"\s+(?:and|&|und|et|y|e)\s+", ", ", text)
    text = re.sub(r"^\s*(?:and|&)\s+", "", text)
    text = re.sub(r"[;|•·]", ",", text)
    segments = [s for s in (p.strip() for p in text.split(",")) if s]
    names: list[str] = []
    n_segments = 0
    for seg in segments:
        cleaned = _clean_name_segment(seg)
        if not cleaned:
            continue
        if cleaned.lower().strip(".") in ("jr", "sr") and names:
            names[-1] += f" {cleaned}"
            continue
        if cleaned.lower().strip(".") in _DEGREES:
            continue
        collab = _collaborations(cleaned)
        if collab:
            names.extend(collab)
            n_segments += 1
            continue
        if _is_name(cleaned):
            names.append(_fix_case(cleaned))
            n_segments += 1
        elif (
            len(cleaned.split()) >= 2
            or cleaned.lower() in _AFFIL_WORDS
            or any(c.isdigit() for c in seg)
        ):
            n_segments += 1  # clearly not a name; lone words ("Member", "IEEE") stay neutral
    return names, n_segments


def _collaborations(text: str) -> list[str] | None:
    """'The ATLAS and CMS Collaborations' -> ['ATLAS Collaboration', 'CMS Collaboration']."""
    m = _COLLAB_RE.match(text.strip())
    if not m or len(m.group(1).split()) > 8:
        return None
    groups = re.split(r"\s*(?:,|\band\b|&)\s*", m.group(1))
    kind = m.group(2).lower()
    word = "Consortium" if kind.startswith("consorti") else "Collaboration"
    if kind in ("working group", "study group", "investigators"):
        word = m.group(2).title()
    return [f"{g.strip()} {word}" for g in groups if g.strip()]


def _find_authors(p: _Page, title: _TitleCand | None) -> tuple[list[str], list[_Line]]:
    if not p.trusted:
        return [], []
    title_lines = set(id(ln) for ln in title.lines) if title else set()
    start_y = max(ln.y1 for ln in title.lines) - 1 if title else 0.0
    title_size = statistics.median(ln.size for ln in title.lines) if title else 1e9
    cands = [
        ln for ln in p.lines
        if ln.horizontal and ln.y0 >= start_y and id(ln) not in title_lines
    ]  # fmt: skip
    cands.sort(key=lambda x: (round(x.y0, 1), x.x0))
    names: list[str] = []
    used: list[_Line] = []
    style: tuple[float, bool] | None = None
    misses = 0
    for ln in cands:
        if _AUTHOR_STOP_RE.match(ln.text):
            break
        if style is None and ln.y0 > start_y + p.height * 0.3:
            break
        if ln.size > title_size * 1.02 and title is not None:
            continue
        found, n_seg = _split_names(ln.plain)
        if style is None:
            if found and len(found) / max(1, n_seg) >= 0.5 and ln.words <= 60:
                style = (ln.size, ln.bold)
                names.extend(found)
                used.append(ln)
            elif ln.words >= 15 and ln.size <= p.body_size * 1.05:
                break  # reached body text without finding a byline
            continue
        tol = 0.2 * style[0] if p.ocr else 0.5
        same_style = abs(ln.size - style[0]) <= tol and ln.bold == style[1]
        if same_style and found:
            if len(found) / max(1, n_seg) >= 0.5:
                names.extend(found)
                used.append(ln)
                misses = 0
                continue
            # "Name, Affiliation, City" lines of some conference templates
            first = _clean_name_segment(re.split(r"[,;]", ln.plain)[0])
            if found and found[0] == _fix_case(first) and re.search(r"\b[A-Z]\.", first):
                names.append(found[0])
                used.append(ln)
                misses = 0
                continue
        if ln.words >= 15 and not same_style:
            break
        misses += 1
        if misses > 12:
            break
    # de-duplicate, keep order
    seen = set()
    unique = []
    for n in names:
        k = _norm_key(n)
        if k and k not in seen:
            seen.add(k)
            unique.append(n)
    return unique, used


def _names_from_meta(values: list[str]) -> list[str]:
    out = []
    for v in values:
        for part in re.split(r"\s*(?:;|\band\b|&|\n|\ufeff|\u2c20)\s*", v):
            part = part.strip(" ,")
            if not part:
                continue
            if part.count(",") == 1:  # "Family, Given"
                fam, given = (x.strip() for x in part.split(","))
                if fam and given and len(given.split()) <= 3:
                    part = f"{given} {fam}"
            for sub in part.split(",") if part.count(",") > 1 else [part]:
                sub = _clean_name_segment(re.sub(r"\[[^\]]*\]", " ", sub))
                if _is_name(sub):
                    out.append(_fix_case(sub))
    return out


def _family(name: str) -> str:
    toks = name.split()
    return _norm_key(toks[-1]) if toks else ""


# ---------------------------------------------------------------------------
# Year, journal
# ---------------------------------------------------------------------------

_YEAR = r"((?:19|20)\d{2})"
_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_YEAR_PATTERNS: list[tuple[re.Pattern[str], float, str]] = [
    (re.compile(rf"\b(?:published(?: online)?|available online|epub|first published|"
                rf"date of publication|online publication)\b[^\n]{{0,40}}?\b{_YEAR}\b", re.I),
     5.0, "published"),
    (re.compile(rf"(?:©|\(c\)|copyright)\s*(?:\(c\)\s*)?(?:by\s+)?{_YEAR}\b", re.I), 4.0, "copyright"),
    (re.compile(rf"(?:©|copyright)\b[^\n]{{0,60}}?\b{_YEAR}\b", re.I), 2.0, "copyright"),
    (re.compile(rf"\baccepted\b[^\n]{{0,40}}?\b{_YEAR}\b", re.I), 3.0, "accepted"),
    (re.compile(rf"\b(?:received|submitted)\b[^\n]{{0,40}}?\b{_YEAR}\b", re.I), 1.5, "received"),
    (re.compile(rf"\({_YEAR}\)\s*[,:;]?\s*\d", re.I), 3.0, "citation"),
    (re.compile(rf"\b{_YEAR}\s*[,;]\s*(?:vol\.?\s*)?\d+\s*[(:,]", re.I), 3.0, "citation"),
    (re.compile(rf"\b\d+\s*\(\d+\)\s*[,:]?\s*(?:pp?\.\s*)?\d*[^\n]{{0,10}}?\b{_YEAR}\b", re.I),
     2.0, "citation"),
    (re.compile(rf"\.\s{_YEAR}\.\s", re.I), 2.0, "citation"),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}\s*,?\s*{_YEAR}\b", re.I), 1.5, "date"),
    (re.compile(rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?\s*,\s*{_YEAR}\b", re.I), 1.5, "date"),
    (re.compile(rf"\b{_YEAR}[/-](?:0[1-9]|1[0-2])[/-](?:[0-3]\d)\b"), 1.5, "date"),
    (re.compile(rf"\b{_MONTHS}\s+{_YEAR}\b", re.I), 1.0, "date"),
    (re.compile(rf"{_YEAR}\s*년\s*\d{{1,2}}\s*월"), 1.5, "date"),
]  # fmt: skip


_DOWNLOAD_RE = re.compile(r"\b(?:downloaded|accessed|retrieved|printed on|generated on)\b", re.I)


def _strip_ids(text: str) -> str:
    text = DOI_RE.sub(" ", text)
    text = re.sub(r"https?://\S+|www\.\S+|\S+@\S+", " ", text)
    text = _ARXIV_RE.sub(" ", text)
    text = re.sub(r"\bISS?N:?\s*[\d-]+X?|\bISBN:?\s*[\d-]+", " ", text, flags=re.I)
    return text


def _pdf_date_year(value: str | None) -> int | None:
    if not value:
        return None
    m = re.search(r"(?:D:)?((?:19|20)\d{2})", value)
    return int(m.group(1)) if m else None


_JOURNAL_WORDS_RE = re.compile(
    r"\b(?:journal|proceedings|transactions|letters|review|reviews|annals|bulletin|acta|"
    r"conference|symposium|workshop|magazine|quarterly|archives|reports|advances|frontiers|"
    r"comput\.|j\.|proc\.|trans\.|lett\.|rev\.)",
    re.I,
)


def _clean_journal(text: str) -> str | None:
    if re.search(
        r"©|\bcopyright\b|licen[cs]|\bauthors?\b|\(c\)|rights reserved|downloaded", text, re.I
    ):
        return None
    t = _strip_ids(text)
    t = re.sub(r"\bdoi\b\s*:?", " ", t, flags=re.I)
    t = re.sub(r"\b[\w’'-]+\s+et\s+al\.?,?", " ", t)
    t = re.sub(r"\(\s*(?:19|20)\d{2}\s*\)", " ", t)
    t = re.sub(r"\b(?:19|20)\d{2}\b", " ", t)
    t = re.sub(r"\b(?:vol(?:ume)?\.?|no\.?|issue|pp?\.|page)\s*\S+", " ", t, flags=re.I)
    t = re.sub(r"\b\d[\d:()/–-]*[a-z]?\d*\b", " ", t)
    t = re.sub(r"\b(?:of|/)\s*$", " ", t)
    t = re.sub(r"[|,;:\s]+$", "", re.sub(r"^[|,;:.\s]+", "", t))
    t = re.sub(r"\s+", " ", t).strip(" .,:;|-–")
    if len(t) < 4 or len(t.split()) > 14 or not re.search(r"[A-Za-z]{3}", t):
        return None
    return t


def _journal_from_meta(xmp: str, info: dict[str, str]) -> tuple[str | None, str]:
    for tag in ("prism:publicationName", "prism:PublicationName", "pdfx:journal"):
        vals = _xmp_values(xmp, tag)
        if vals and _clean_journal(vals[0]):
            return vals[0].strip(), "xmp"
    subj = info.get("subject") or ""
    if subj and (DOI_RE.search(subj) or re.search(r"\b(?:19|20)\d{2}\b", subj)):
        head = re.split(r",|\bdoi\b", subj, maxsplit=1, flags=re.I)[0]
        j = _clean_journal(head)
        if j and _JOURNAL_WORDS_RE.search(head):
            return j, "pdf_info"
    return None, ""


_BIBLINE_RE = re.compile(
    r"^(?:.*?\bet al\.?,?\s+)?([A-Z][\w.&:' -]{2,80}?)\s*,?\s*\(?((?:19|20)\d{2})\)?\s*[,;:]?\s*"
    r"(?:vol\.?\s*)?\d+"
)


def _find_journal(
    pages: list[_Page], first: int, title: str | None, running: Counter[str]
) -> tuple[str | None, str]:
    """Journal from running headers/footers and the first page's banner lines."""
    counts: Counter[str] = Counter()
    for p in pages[first:]:
        for ln in p.lines:
            if p.index != first and not (
                ln.horizontal and _in_hf_zone(ln, p) and _hf_key(ln.text) in running
            ):
                continue
            if p.index == first and not (_in_hf_zone(ln, p) or ln.y0 < p.height * 0.15):
                continue
            for piece in re.split(r"\s[|•·]\s|\s{3,}", ln.text):
                if title and _similar(piece, title) > 0.6:
                    continue  # running head with the article title
                bib = _BIBLINE_RE.match(_strip_ids(piece).strip())
                if bib:
                    j = _clean_journal(bib.group(1))
                    if j and len(j.split()) >= 1 and not re.search(r"\d", j):
                        counts[j] += 3
                        continue
                m = re.search(
                    r"((?:The\s+)?(?:Journal|Proceedings|Transactions|Annals|Bulletin|Acta|"
                    r"Archives|Advances|Frontiers)\s+(?:of|in|on|for)\s+[^\d,(|]+)",
                    piece,
                )
                generic = p.index != first and len(piece.split()) <= 12
                cand = (
                    m.group(1)
                    if m
                    else (piece if generic and _JOURNAL_WORDS_RE.search(piece) else None)
                )
                if not cand:
                    continue
                j = _clean_journal(cand)
                if j and len(j.split()) >= 2:
                    counts[j] += 2 if m else 1
    if counts:
        best, _ = counts.most_common(1)[0]
        return best, "layout:running_header"
    return None, ""


# ---------------------------------------------------------------------------
# Abstract and keywords
# ---------------------------------------------------------------------------

_ABSTRACT_HEAD_RE = re.compile(
    r"^\s*(?:a\s?b\s?s\s?t\s?r\s?a\s?c\s?t|summary|résumé|(?:국문\s?)?초\s?록|요\s?약)\b"
    r"\s*[.:—–-]*\s*(.*)$",
    re.I,
)
_ABSTRACT_END_RE = re.compile(
    r"^\s*(?:주제어|핵심어|키워드|중심어|검색어|(?:\d+\.?|i\.)?\s*서\s?론\b|"
    r"key\s*-?\s*words?|index terms|keywords and phrases|(?:\d+\.?|i\.|1\s)\s*"
    r"(?:introduction|background|motivation|overview)|introduction\b|ccs concepts|"
    r"subjects\b|acm reference format|how to cite|citation\s*:|©|copyright\b|"
    r"received\b|accepted\b|published\b|submitted\b|editor\b|academic editor|"
    r"\*?\s*correspond|e-?mail\b|open access\b|funding\b|competing interests|"
    r"abbreviations\b|highlights\b|article info|a r t i c l e|jel\b|ams subject|"
    r"pacs\b|msc\b|doi\b|https?://doi)",
    re.I,
)
_KEYWORDS_RE = re.compile(
    r"^\s*(?:key\s*-?\s*words?(?: and phrases)?|index terms|author keywords|주제어|핵심어|"
    r"키워드|중심어|검색어)\b\s*[:.—–-]*\s*(.*)$",
    re.I,
)
_LICENSE_RE = re.compile(
    r"creative commons|licen[cs]e|permits unrestricted|©|copyright|all rights reserved|"
    r"open access article",
    re.I,
)


def _is_heading_line(ln: _Line, body: float, prev: _Line | None) -> bool:
    t = ln.text.strip()
    if not t or len(t.split()) > 8 or t.endswith((".", ",", ";")):
        return False
    bigger = ln.size > body * 1.12 if body else False
    new_block = prev is not None and prev.block != ln.block
    numbered = re.match(r"^(?:\d+(?:\.\d+)*\.?|[IVX]+\.)\s+[A-Z]", t) is not None
    upper = _is_mostly_upper(t) and len(t) > 5
    return (bigger or (ln.bold and new_block) or numbered or upper) and new_block


def _find_abstract(p: _Page, after_y: float, min_y: float = 0.0) -> tuple[str | None, str]:
    lines = p.lines
    for i, ln in enumerate(lines):
        if ln.y0 < min_y:
            continue
        m = _ABSTRACT_HEAD_RE.match(ln.text)
        if not m or len(ln.text.split()) > 40 and not m.group(1):
            continue
        rest = m.group(1).strip()
        if rest and rest[0].islower() and len(rest.split()) < 3:
            continue  # "Summary of ..." inside a sentence
        collected: list[_Line] = []
        first_text = rest
        size = None
        for nxt in lines[i + 1 :]:
            if _ABSTRACT_END_RE.match(nxt.text):
                break
            prev = collected[-1] if collected else ln
            if collected and _is_heading_line(nxt, size or p.body_size, prev):
                break
            if (
                size is not None
                and nxt.size
                and abs(nxt.size - size) > 1.5
                and nxt.block != prev.block
            ):
                break
            if not nxt.horizontal:
                continue
            collected.append(nxt)
            if size is None and nxt.size:
                size = nxt.size
            if sum(x.words for x in collected) > 700:
                break
        parts = ([first_text] if first_text else []) + [x.text for x in collected]
        text = clean_text("\n".join(parts)).replace("\n\n", " ")
        if len(text.split()) >= 20:
            return text, "text:abstract_heading"
    # No heading: the first long paragraph after the byline that is not a licence.
    by_block: dict[int, list[_Line]] = defaultdict(list)
    for ln in lines:
        if ln.horizontal and ln.y0 >= after_y:
            by_block[ln.block].append(ln)
    for blk in sorted(by_block.values(), key=lambda b: (b[0].y0, b[0].x0)):
        text = clean_text("\n".join(x.text for x in blk)).replace("\n\n", " ")
        if len(text.split()) >= 60 and not _LICENSE_RE.search(text):
            return text, "text:first_paragraph"
    return None, ""


def _find_keywords(p: _Page, min_y: float = 0.0) -> list[str]:
    lines = p.lines
    for i, ln in enumerate(lines):
        if ln.y0 < min_y:
            continue
        m = _KEYWORDS_RE.match(ln.text)
        if not m:
            continue
        inline = m.group(1).strip()
        parts = [inline] if inline else []
        for nxt in lines[i + 1 : i + 12]:
            if nxt.block != ln.block and parts:
                # Another block continues only a one-per-line list under a bare heading.
                if inline or len(nxt.text.split()) > 6 or nxt.text.endswith("."):
                    break
                if nxt.bold != lines[i + 1].bold or abs(nxt.size - lines[i + 1].size) > 0.3:
                    break
            if _ABSTRACT_END_RE.match(nxt.text) or _ABSTRACT_HEAD_RE.match(nxt.text):
                break
            if len(nxt.text.split()) > 14 and not re.search(r"[,;·•]", nxt.text):
                break
            if abs(nxt.size - ln.size) > 1.5 and nxt.size and ln.size:
                break
            parts.append(nxt.text.strip())
        if not parts:
            continue
        joined = "\n".join(parts)
        if re.search(r"[,;·•]", joined):
            joined = re.sub(r"-\n(?=[a-z])", "", joined).replace("\n", " ")
            items = re.split(r"\s*[,;·•]\s*", joined)
        else:
            items = joined.split("\n")
        out = []
        for it in items:
            it = re.sub(r"\s+", " ", it).strip(" .;:")
            if 1 < len(it) <= 80 and len(it.split()) <= 8 and it not in out:
                out.append(it)
        if out:
            return out[:20]
    return []


# ---------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------


def _pick_year(
    pages: list[_Page], first: int, abstract_y: float, xmp: str, info: dict[str, str],
    arxiv_id: str | None, skip_above: float = 0.0,
) -> tuple[int | None, str]:  # fmt: skip
    now = _dt.date.today().year
    votes: dict[int, float] = defaultdict(float)
    why: dict[int, str] = {}

    def vote(y: int, w: float, src: str) -> None:
        if 1900 <= y <= now + 1:
            votes[y] += w
            if y not in why or w >= 3:
                why[y] = src

    fp = pages[first]
    for ln in fp.lines:
        if ln.y1 < skip_above and not _in_hf_zone(ln, fp):
            continue  # the end of another article above this one's title
        if _DOWNLOAD_RE.search(ln.text):
            continue  # download/access stamps date the copy, not the paper
        text = _strip_ids(ln.text)
        front = ln.y0 < abstract_y or _in_hf_zone(ln, fp) or not ln.horizontal
        for pat, w, name in _YEAR_PATTERNS:
            strong = name in ("published", "copyright", "accepted", "received")
            if not (front or strong):
                continue
            if _REF_LINE_RE.search(ln.text) and not strong:
                continue
            for m in pat.finditer(text):
                vote(int(m.group(1)), w, f"text:{name}")
    if first > 0:  # a cover sheet's "Published online" line
        for ln in pages[0].lines:
            if _DOWNLOAD_RE.search(ln.text):
                continue
            for m in _YEAR_PATTERNS[0][0].finditer(_strip_ids(ln.text)):
                vote(int(m.group(1)), 3.0, "text:published")
    # Running headers/footers of the next pages (journal line with the year).
    for p in pages[first + 1 : first + 4]:
        seen = set()
        for ln in p.lines:
            if ln.horizontal and _in_hf_zone(ln, p):
                for m in re.finditer(rf"\b{_YEAR}\b", _strip_ids(ln.text)):
                    seen.add(int(m.group(1)))
        for y in seen:
            vote(y, 1.0, "layout:running_header")
    for tag, w in (("prism:coverDate", 4.0), ("prism:publicationDate", 4.0), ("dc:date", 1.0)):
        for v in _xmp_values(xmp, tag)[:1]:
            y = _pdf_date_year(v)
            if y:
                vote(y, w, "xmp")
    if arxiv_id and re.match(r"\d{4}\.", arxiv_id):
        vote(2000 + int(arxiv_id[:2]), 3.0, "pattern:arxiv")
    if not votes:
        for key in ("creationDate", "modDate"):
            y = _pdf_date_year(info.get(key))
            if y:
                vote(y, 1.0, "pdf_info")
                break
    if not votes:
        return None, ""
    best = max(votes.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return best, why[best]


def extract_metadata(doc: pymupdf.Document, pages: list[PageText]) -> ExtractedMetadata:
    """Combine info/XMP, first-page layout and text patterns into one metadata record."""
    meta = ExtractedMetadata()
    try:
        return _extract(doc, pages, meta)
    except Exception:  # metadata is best effort: never fail an ingest over it
        log.exception("metadata extraction failed")
        return meta


def _extract(
    doc: pymupdf.Document, pages: list[PageText], meta: ExtractedMetadata
) -> ExtractedMetadata:
    n = doc.page_count
    if n == 0:
        return meta
    info = {k: (v or "") for k, v in (doc.metadata or {}).items()}
    try:
        xmp = doc.get_xml_metadata() or ""
    except Exception:
        xmp = ""
    loaded = [_load_page(doc, i, pages) for i in range(min(n, 6))]
    running = _running_lines(loaded)

    first = 0
    if _is_cover_sheet(loaded[0], n) and len(loaded) > 1:
        first = 1
    fp = loaded[first]

    journal, jsrc = _journal_from_meta(xmp, info)

    # ---- title
    cands = _title_candidates(fp, running, journal)
    meta_titles = []
    for v in _xmp_values(xmp, "dc:title")[:1]:
        if _plausible_title(v):
            meta_titles.append((_norm_line(v), "xmp"))
    if _plausible_title(info.get("title")):
        meta_titles.append((_norm_line(info["title"]), "pdf_info"))
    front_text = " ".join(p.text for p in loaded[: first + 2])
    front_words = {_norm_key(w) for w in front_text.split()}
    verified = [(t, s) for t, s in meta_titles if _words_found(t, front_words) >= 0.85]
    # A metadata title that matches a layout candidate confirms it.
    for c in cands:
        for t, _s in meta_titles:
            if _similar(c.text, t) > 0.8:
                c.score += 10.0
    cands.sort(key=lambda c: c.score, reverse=True)
    # A title stands out: larger than the body text, or at least bold.
    best = next(
        (
            c
            for c in cands[:1]
            if c.size_ratio >= 1.1 or (c.size_ratio >= 0.98 and all(ln.bold for ln in c.lines))
        ),
        None,
    )
    title_src = "layout:first_page" if first == 0 else "layout:after_cover_page"
    if best is not None:
        title = best.text
        match = next(((t, s) for t, s in meta_titles if _similar(title, t) > 0.8), None)
        if match and _is_mostly_upper(title):
            title = match[0]
        elif _is_mostly_upper(title):
            title = _smart_title_case(title)
        if verified and not match and best.size_ratio < 1.3:
            title, title_src = verified[0]  # weak layout guess vs a confirmed metadata title
            best = next((c for c in cands if _similar(c.text, title) > 0.8), None)
        meta.title = title
        meta.sources["title"] = title_src
    elif verified:
        meta.title, meta.sources["title"] = verified[0]
    elif meta_titles:
        meta.title, meta.sources["title"] = meta_titles[0]

    # ---- authors
    authors, author_lines = _find_authors(fp, best) if best is not None else ([], [])
    meta_names = _names_from_meta(_xmp_values(xmp, "dc:creator")) or _names_from_meta(
        [info.get("author") or ""]
    )
    page_keys = {_norm_key(w) for w in fp.text.split()}
    confirmed = [nm for nm in meta_names if _family(nm) in page_keys]
    meta_src = "xmp" if _xmp_values(xmp, "dc:creator") else "pdf_info"
    if authors:
        meta.authors = authors
        meta.sources["authors"] = title_src
        # Metadata listing every printed author confirms a byline we read only partly.
        fams = {_family(a) for a in authors}
        if len(confirmed) > len(authors) and fams <= {_family(c) for c in confirmed}:
            meta.authors = confirmed
            meta.sources["authors"] = meta_src
    elif confirmed:
        meta.authors = confirmed
        meta.sources["authors"] = meta_src

    # ---- DOI and arXiv
    title_line = best.lines[0] if best else None
    # Much body text above the title means the page starts with the end of
    # another article: DOIs, years and headings up there belong to that article.
    tail_mode = False
    if title_line is not None:
        above = sum(
            ln.words for ln in fp.lines
            if ln.y1 < title_line.y0 and ln.horizontal and not _in_hf_zone(ln, fp)
        )  # fmt: skip
        tail_mode = above >= 60
    abstract_y = fp.height
    for ln in fp.lines:
        if tail_mode and title_line is not None and ln.y0 < title_line.y0:
            continue
        if _ABSTRACT_HEAD_RE.match(ln.text) or _AUTHOR_STOP_RE.match(ln.text):
            abstract_y = min(abstract_y, ln.y0 + 1)
    if abstract_y == fp.height:
        abstract_y = fp.height * 0.4
    dois = _collect_dois(loaded, first, title_line, xmp, info, tail_mode, abstract_y)
    if first == 1:  # DOIs printed on the cover sheet count, a little less
        for k, c in _collect_dois(loaded, 0, None, "", {}, running=False).items():
            if k in dois:
                dois[k].score += 1.0
            else:
                c.score -= 0.5
                dois[k] = c
    if dois:
        cand = max(dois.values(), key=lambda c: c.score)
        if cand.score >= 3.0:
            meta.doi = cand.doi
            meta.sources["doi"] = (
                "xmp"
                if "xmp" in cand.why
                else "pdf_info"
                if "pdf_info" in cand.why
                else "pattern:doi"
            )
    arxiv_id, asrc = _find_arxiv(loaded[first:], xmp, info)
    if arxiv_id:
        meta.arxiv_id = arxiv_id
        meta.sources["arxiv_id"] = asrc
        if meta.doi is None:
            meta.doi = f"10.48550/arXiv.{arxiv_id}"
            meta.sources["doi"] = "derived:arxiv"

    # ---- abstract, keywords
    after_y = max((ln.y1 for ln in author_lines), default=title_line.y1 if title_line else 0.0)
    min_y = title_line.y0 - 2 if (tail_mode and title_line is not None) else 0.0
    abstract, absrc = _find_abstract(fp, after_y, min_y)
    if abstract is None and first + 1 < len(loaded):
        abstract, absrc = _find_abstract(loaded[first + 1], 0.0)
        if absrc == "text:first_paragraph":
            abstract, absrc = None, ""
    if abstract:
        meta.abstract = abstract
        meta.sources["abstract"] = absrc
    kws = _find_keywords(fp, min_y) or (
        _find_keywords(loaded[first + 1]) if first + 1 < len(loaded) else []
    )
    if kws:
        meta.keywords = kws
        meta.sources["keywords"] = "text:keywords"
    else:
        raw = info.get("keywords") or ""
        if raw and not DOI_RE.search(raw):
            items = [k.strip() for k in re.split(r"[;,]", raw) if 1 < len(k.strip()) <= 80]
            if items:
                meta.keywords = items[:20]
                meta.sources["keywords"] = "pdf_info"

    if journal is None:
        journal, jsrc = _find_journal(loaded, first, meta.title, running)

    # ---- year, journal
    skip_above = title_line.y0 if (tail_mode and title_line is not None) else 0.0
    year, ysrc = _pick_year(loaded, first, abstract_y, xmp, info, arxiv_id, skip_above)
    if year:
        meta.year = year
        meta.sources["year"] = ysrc
    if journal:
        meta.journal = journal
        meta.sources["journal"] = jsrc
    return meta
