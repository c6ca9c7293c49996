"""The neutral record every format is written from and read into, plus name handling.

Papers keep authors as display strings ("Andrew E. Webb"); citation formats need
family/given parts. Splitting is conservative: a comma means "Family, Given";
otherwise the last word is the family name, keeping lowercase particles
("van", "de la") with it; group authors ("ATLAS Collaboration") and single-word
names (e.g. Korean names without spaces) stay literal so no format mangles them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = {
    "bibtex": ("application/x-bibtex; charset=utf-8", "bib"),
    "ris": ("application/x-research-info-systems; charset=utf-8", "ris"),
    "csljson": ("application/vnd.citationstyles.csl+json; charset=utf-8", "json"),
}

PARTICLES = {
    "van", "von", "de", "der", "den", "del", "della", "di", "da", "dos", "das", "du",
    "la", "le", "ten", "ter", "zu", "af", "av", "bin", "ibn", "al", "el", "st.",
}  # fmt: skip
_GROUP = re.compile(
    r"\b(collaboration|consortium|group|team|committee|association|society|project|"
    r"institute|organization|organisation|network|initiative)\b",
    re.IGNORECASE,
)


@dataclass
class Name:
    family: str | None = None
    given: str | None = None
    literal: str | None = None

    @property
    def display(self) -> str:
        if self.literal:
            return self.literal
        return " ".join(x for x in (self.given, self.family) if x)


def split_name(name: str) -> Name:
    """'Andrew E. Webb' → Webb / Andrew E.; 'Webb, Andrew' → Webb / Andrew; groups literal."""
    name = " ".join(name.split())
    if not name:
        return Name(literal="")
    if _GROUP.search(name):
        return Name(literal=name)
    if "," in name:
        family, _, given = name.partition(",")
        return Name(family=family.strip() or None, given=given.strip() or None)
    words = name.split(" ")
    if len(words) == 1:
        return Name(literal=name)
    i = len(words) - 1
    while i > 1 and words[i - 1].lower() in PARTICLES:
        i -= 1
    return Name(family=" ".join(words[i:]), given=" ".join(words[:i]))


def join_name(family: str | None, given: str | None, literal: str | None = None) -> str:
    """Back to the display form the library stores."""
    if literal:
        return literal.strip()
    return " ".join(x.strip() for x in (given, family) if x and x.strip())


@dataclass
class CitationRecord:
    """One reference in a format-neutral shape (the library's field names)."""

    key: str
    title: str | None = None
    authors: list[str] = field(default_factory=list)
    year: int | None = None
    journal: str | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    abstract: str | None = None
    keywords: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    doc_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """A coarse type: journal article when a journal is known, else a generic document."""
        return "article" if self.journal else "misc"

    def fields(self) -> dict[str, Any]:
        """The library fields this record carries (for metadata import)."""
        out: dict[str, Any] = {}
        for name in ("title", "authors", "year", "journal", "doi", "abstract", "keywords"):
            v = getattr(self, name)
            if v not in (None, "", []):
                out[name] = v
        return out


def _ascii(text: str) -> str:
    t = unicodedata.normalize("NFKD", text)
    return "".join(c for c in t if c.isascii() and c.isalnum()).lower()


def make_key(authors: list[str], year: int | None, title: str | None, used: set[str]) -> str:
    """A BibTeX-safe citation key (family + year + first title word), unique in ``used``."""
    fam = ""
    if authors:
        n = split_name(authors[0])
        fam = _ascii((n.family or n.literal or "").split(" ")[-1])
    word = ""
    for w in (title or "").split():
        a = _ascii(w)
        if len(a) > 3:
            word = a
            break
    base = f"{fam or 'anon'}{year or ''}{word}"[:60] or "ref"
    key = base
    n = 0
    while key in used:
        n += 1
        key = f"{base}{chr(ord('a') + (n - 1) % 26)}{'' if n <= 26 else n}"
    used.add(key)
    return key


def records_from_papers(papers: Iterable[Any]) -> list[CitationRecord]:
    """Citation records for stored papers (ORM rows or objects with the same attributes)."""
    used: set[str] = set()
    out = []
    for p in papers:
        authors = list(p.authors or [])
        out.append(
            CitationRecord(
                key=make_key(authors, p.year, p.title, used),
                title=p.title,
                authors=authors,
                year=p.year,
                journal=p.journal,
                doi=p.doi,
                arxiv_id=getattr(p, "arxiv_id", None),
                abstract=p.abstract,
                keywords=list(p.keywords or []),
                tags=list(getattr(p, "tags", None) or []),
                doc_id=p.doc_id,
            )
        )
    return out


def export_records(records: list[CitationRecord], fmt: str) -> str:
    """Serialise records as ``bibtex``, ``ris`` or ``csljson``."""
    if fmt == "bibtex":
        from refserver.interop.bibtex import dumps
    elif fmt == "ris":
        from refserver.interop.ris import dumps
    elif fmt == "csljson":
        from refserver.interop.csljson import dumps
    else:
        raise ValueError(f"format must be one of: {', '.join(FORMATS)}")
    return dumps(records)


def detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".bib", ".bibtex"):
        return "bibtex"
    if suffix in (".ris", ".txt") and re.search(r"^TY  - ", text, re.MULTILINE):
        return "ris"
    if suffix == ".json" or text.lstrip().startswith(("[", "{")):
        return "csljson"
    if re.search(r"^\s*@\w+\s*[{(]", text, re.MULTILINE):
        return "bibtex"
    if re.search(r"^TY  - ", text, re.MULTILINE):
        return "ris"
    raise ValueError(f"cannot tell the format of {path.name}: use .bib, .ris or .json")


def parse_file(path: Path) -> tuple[str, list[CitationRecord]]:
    """(format, records) of a BibTeX, RIS or CSL-JSON file."""
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    fmt = detect_format(Path(path), text)
    if fmt == "bibtex":
        from refserver.interop.bibtex import loads
    elif fmt == "ris":
        from refserver.interop.ris import loads
    else:
        from refserver.interop.csljson import loads
    return fmt, loads(text)


def parse_year(value: Any) -> int | None:
    m = re.search(r"\b(1[5-9]\d\d|20\d\d|21\d\d)\b", str(value or ""))
    return int(m.group(1)) if m else None


def split_keywords(value: Any) -> list[str]:
    items = value if isinstance(value, list) else re.split(r"\s*[;,]\s*", str(value or ""))
    return [str(k).strip() for k in items if str(k).strip()]
