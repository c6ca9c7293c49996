"""Optional refinement of extracted metadata by an OpenAI-compatible LLM (off by default).

The model only proposes values. A value is merged when it parses, is
plausible, and is grounded in the first page's text (so a hallucinated DOI or
author cannot slip in); anything else keeps the rule-based value. A slow,
failing or nonsensical endpoint never breaks ingestion: the input comes back
unchanged and a warning is logged.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import re
import unicodedata
from typing import Any

import httpx

from .metadata import DOI_RE, ExtractedMetadata, normalize_doi

__all__ = ["refine_with_llm"]

log = logging.getLogger(__name__)

_MAX_PAGE_CHARS = 6000
_PROMPT = """You extract bibliographic metadata from the first page of a scientific paper.
Answer with one JSON object and nothing else, with these keys:
"title" (string), "authors" (list of "Given Family" strings, in order), "year" (integer),
"journal" (string or null), "doi" (string or null), "abstract" (string or null),
"keywords" (list of strings).
Use only what is printed on the page; use null or [] when a value is not there.

Current guesses (may be wrong or missing):
{guess}

First page text:
<<<
{page}
>>>"""


def _key(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text.lower() if c.isalnum())


def _grounded(value: str, page_key: str, min_share: float = 0.8) -> bool:
    """Most of the value's words occur in the page text."""
    words = [_key(w) for w in value.split()]
    words = [w for w in words if len(w) > 1]
    if not words:
        return False
    return sum(1 for w in words if w in page_key) / len(words) >= min_share


def _endpoint(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def _parse_json_object(content: str) -> dict[str, Any] | None:
    """The first JSON object in a reply (models like to wrap it in prose or fences)."""
    content = re.sub(r"```(?:json)?", "", content)
    start = content.find("{")
    while start != -1:
        depth = 0
        in_str = False
        esc = False
        for i in range(start, len(content)):
            c = content[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(content[start : i + 1])
                    except ValueError:
                        break
                    return obj if isinstance(obj, dict) else None
        start = content.find("{", start + 1)
    return None


def _set(out: ExtractedMetadata, name: str, value: Any) -> None:
    if getattr(out, name) != value:
        setattr(out, name, value)
        out.sources[name] = "llm"


def _merge(meta: ExtractedMetadata, data: dict[str, Any], page_text: str) -> ExtractedMetadata:
    out = copy.deepcopy(meta)
    page_key = _key(page_text)

    title = data.get("title")
    if isinstance(title, str):
        title = re.sub(r"\s+", " ", title).strip()
        if 8 <= len(title) <= 400 and len(title.split()) >= 2 and _grounded(title, page_key, 0.9):
            _set(out, "title", title)

    authors = data.get("authors")
    if isinstance(authors, list) and authors and all(isinstance(a, str) for a in authors):
        names = [re.sub(r"\s+", " ", a).strip() for a in authors if a.strip()]
        plausible = [
            n for n in names
            if 2 <= len(n) <= 80 and not any(ch.isdigit() for ch in n) and "@" not in n
        ]  # fmt: skip
        family_ok = [n for n in plausible if _key(n.split()[-1]) in page_key]
        if names and len(family_ok) == len(names) and len(names) <= 500:
            _set(out, "authors", names)

    year = data.get("year")
    if isinstance(year, str) and year.strip().isdigit():
        year = int(year.strip())
    if (
        isinstance(year, int)
        and not isinstance(year, bool)
        and 1900 <= year <= _dt.date.today().year + 1
        and str(year) in page_text
    ):
        _set(out, "year", year)

    doi = data.get("doi")
    if isinstance(doi, str):
        norm = normalize_doi(doi)
        printed = {normalize_doi(m.group(1)) for m in DOI_RE.finditer(page_text)}
        if (
            norm
            and norm.lower() in {d.lower() for d in printed if d}
            and (out.doi or "").lower() != norm.lower()
        ):
            _set(out, "doi", norm)

    journal = data.get("journal")
    if isinstance(journal, str):
        journal = re.sub(r"\s+", " ", journal).strip()
        if 3 <= len(journal) <= 200 and _grounded(journal, page_key, 0.8) and not out.journal:
            out.journal = journal
            out.sources["journal"] = "llm"

    abstract = data.get("abstract")
    if isinstance(abstract, str) and not out.abstract:
        abstract = re.sub(r"\s+", " ", abstract).strip()
        if len(abstract.split()) >= 20 and _grounded(abstract, page_key, 0.9):
            out.abstract = abstract
            out.sources["abstract"] = "llm"

    keywords = data.get("keywords")
    if isinstance(keywords, list) and not out.keywords:
        kws = [k.strip() for k in keywords if isinstance(k, str) and 1 < len(k.strip()) <= 80]
        kws = [k for k in kws if _grounded(k, page_key, 1.0)]
        if kws:
            out.keywords = kws[:20]
            out.sources["keywords"] = "llm"
    return out


def refine_with_llm(
    meta: ExtractedMetadata,
    first_page_text: str,
    *,
    base_url: str,
    model: str,
    api_key: str | None,
    timeout: float,
) -> ExtractedMetadata:
    """Ask an OpenAI-compatible chat endpoint to check the metadata; merge grounded answers.

    Never raises: on any transport, HTTP or parsing problem the input is returned
    unchanged (as a copy) and a warning is logged.
    """
    guess = {
        "title": meta.title,
        "authors": meta.authors,
        "year": meta.year,
        "journal": meta.journal,
        "doi": meta.doi,
    }
    body = {
        "model": model,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": _PROMPT.format(
                    guess=json.dumps(guess, ensure_ascii=False),
                    page=first_page_text[:_MAX_PAGE_CHARS],
                ),
            }
        ],
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = _endpoint(base_url)
    try:
        with httpx.Client(timeout=timeout) as client:
            resp = client.post(url, json=body, headers=headers)
        resp.raise_for_status()
        payload = resp.json()
        content = payload["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("completion content is not text")
        data = _parse_json_object(content)
        if data is None:
            raise ValueError("no JSON object in the completion")
        return _merge(meta, data, first_page_text)
    except Exception as exc:  # any failure: keep the rule-based metadata
        log.warning("LLM metadata refinement skipped (%s): %s", url, exc)
        return copy.deepcopy(meta)
