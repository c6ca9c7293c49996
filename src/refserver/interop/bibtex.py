"""BibTeX: written by hand (so escaping is exact), read with bibtexparser v2.

Values are UTF-8 (biber, Zotero and bibtexparser all read it); only the
characters TeX treats as syntax are escaped. Capitalised words in titles are
braced so BibTeX styles do not lowercase acronyms. ``doi``/``url`` are verbatim
fields in biblatex, so they are written raw.
"""

from __future__ import annotations

import re
from typing import Any

from refserver.interop.common import (
    CitationRecord,
    join_name,
    parse_year,
    split_keywords,
    split_name,
)

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_VERBATIM = ("doi", "url", "eprint")


def escape(value: str) -> str:
    """TeX-escape a plain string (one pass, so escapes are never escaped twice)."""
    return "".join(_ESCAPES.get(c, c) for c in " ".join(str(value).split()))


def _protect_caps(title: str) -> str:
    """Brace words with capitals after their first letter ('VESPA', 'mRNA', 'McDonald')."""
    out = []
    for word in title.split(" "):
        core = re.sub(r"\\[a-z]+\{\}|\\.", "", word)
        if any(c.isupper() for c in core[1:]):
            out.append("{" + word + "}")
        else:
            out.append(word)
    return " ".join(out)


def _name(name: str) -> str:
    n = split_name(name)
    if n.literal is not None:
        return "{" + escape(n.literal) + "}"
    if n.given:
        return f"{escape(n.family or '')}, {escape(n.given)}"
    return escape(n.family or "")


def entry(rec: CitationRecord) -> str:
    fields: list[tuple[str, str]] = []
    if rec.title:
        fields.append(("title", _protect_caps(escape(rec.title))))
    if rec.authors:
        fields.append(("author", " and ".join(_name(a) for a in rec.authors if a.strip())))
    if rec.year:
        fields.append(("year", str(rec.year)))
    if rec.journal:
        fields.append(("journal", escape(rec.journal)))
    if rec.doi:
        fields.append(("doi", re.sub(r"[{}\s]", "", rec.doi)))
    if rec.arxiv_id:
        fields.append(("eprint", re.sub(r"[{}\s]", "", rec.arxiv_id)))
        fields.append(("archiveprefix", "arXiv"))
    if rec.abstract:
        fields.append(("abstract", escape(rec.abstract)))
    if rec.keywords:
        fields.append(("keywords", escape(", ".join(k.replace(",", " ") for k in rec.keywords))))
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
    return f"@{rec.kind}{{{rec.key},\n{body}\n}}\n"


def dumps(records: list[CitationRecord]) -> str:
    return "\n".join(entry(r) for r in records)


def _decode(text: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text

    # pylatexenc turns \textasciicircum into U+02C6; the character meant is "^".
    text = re.sub(r"\\textasciicircum(\{\}|\b)", "^", text)
    return " ".join(LatexNodes2Text().latex_to_text(text).split())


def loads(text: str) -> list[CitationRecord]:
    """Records from BibTeX text (bibtexparser v2; LaTeX decoded to Unicode)."""
    import bibtexparser
    import bibtexparser.middlewares as m

    lib = bibtexparser.parse_string(
        text, append_middleware=[m.SeparateCoAuthors(), m.SplitNameParts()]
    )
    out: list[CitationRecord] = []
    for e in lib.entries:
        f: dict[str, Any] = {k.lower(): v for k, v in e.fields_dict.items()}

        def val(*names: str, _f: dict[str, Any] = f) -> str | None:
            for n in names:
                if n in _f and _f[n].value not in (None, ""):
                    raw = _f[n].value
                    return raw if n in _VERBATIM else _decode(str(raw))
            return None

        authors: list[str] = []
        if "author" in f:
            for part in f["author"].value:
                if hasattr(part, "last"):
                    fam = " ".join(
                        [*part.von, *part.last, *([", ".join(part.jr)] if part.jr else [])]
                    )
                    literal = None
                    if not part.first and not part.von and len(part.last) == 1:
                        literal = _decode(part.last[0])  # "{ATLAS Collaboration}"
                    authors.append(join_name(_decode(fam), _decode(" ".join(part.first)), literal))
                else:
                    authors.append(_decode(str(part)))
        doi = val("doi")
        if doi:
            doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi.strip(), flags=re.I)
        out.append(
            CitationRecord(
                key=e.key,
                title=val("title"),
                authors=[a for a in authors if a],
                year=parse_year(val("year", "date")),
                journal=val("journal", "journaltitle", "booktitle"),
                doi=doi,
                arxiv_id=val("eprint"),
                abstract=val("abstract"),
                keywords=split_keywords(val("keywords")),
                extra={"entry_type": e.entry_type},
            )
        )
    return out
