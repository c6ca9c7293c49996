"""Judge whether a page's text layer is worth keeping.

A PDF can carry a text layer that is present but useless: fonts without a
usable ToUnicode map give letter-shifted text, dropped glyphs, ``(cid:NN)``
junk or private-use code points. Such text poisons search and metadata, so
every page is scored and bad pages are OCR'd instead.

The score combines language-independent signals (character classes, vowel
bearing words, letter-frequency shape, plausible word lengths) with the share
of very common words. Latin, Hangul and CJK text are judged by their own
signals so Korean or Chinese pages are not penalised for not being English.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from functools import lru_cache

__all__ = ["score_text", "is_usable"]

# The most common English words, plus the commonest function words of the other
# major Latin-script languages of science (fr, de, es, it, pt, nl). Natural prose
# has roughly a third of its tokens in this set; damaged text almost none.
_COMMON_WORDS = frozenset(
    [
        "the",
        "of",
        "and",
        "to",
        "a",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "i",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "they",
        "you",
        "were",
        "her",
        "she",
        "there",
        "been",
        "one",
        "all",
        "we",
        "their",
        "has",
        "would",
        "when",
        "if",
        "so",
        "no",
        "will",
        "can",
        "more",
        "other",
        "its",
        "also",
        "into",
        "than",
        "only",
        "some",
        "these",
        "two",
        "may",
        "such",
        "then",
        "them",
        "those",
        "our",
        "out",
        "up",
        "about",
        "over",
        "after",
        "between",
        "both",
        "each",
        "could",
        "during",
        "first",
        "how",
        "however",
        "most",
        "new",
        "used",
        "using",
        "use",
        "based",
        "where",
        "while",
        "who",
        "whom",
        "whose",
        "within",
        "without",
        "further",
        "well",
        "very",
        "what",
        "any",
        "many",
        "much",
        "through",
        "under",
        "here",
        "same",
        "data",
        "results",
        "method",
        "methods",
        "study",
        "model",
        "analysis",
        "time",
        "high",
        "low",
        "number",
        "different",
        "between",
        "since",
        "because",
        "against",
        "among",
        "per",
        "via",
        "do",
        "does",
        "did",
        "had",
        "should",
        "must",
        "might",
        "et",
        "al",
        "fig",
        "figure",
        "table",
        "section",
        "show",
        "shown",
        "shows",
        "found",
        "given",
        "obtained",
        "observed",
        "three",
        "four",
        "five",
        "large",
        "small",
        "non",
        "than",
        "more",
        "less",
        "case",
        "cases",
        "two",
        "order",
        "level",
        "effect",
        "effects",
        "work",
        "research",
        "paper",
        "approach",
        "system",
        "systems",
        "values",
        "value",
        "set",
        "sets",
        "total",
        "le",
        "la",
        "les",
        "des",
        "du",
        "de",
        "un",
        "une",
        "et",
        "est",
        "en",
        "dans",
        "pour",
        "par",
        "sur",
        "au",
        "aux",
        "que",
        "qui",
        "pas",
        "plus",
        "ou",
        "der",
        "die",
        "das",
        "und",
        "ist",
        "mit",
        "von",
        "zu",
        "den",
        "im",
        "ein",
        "eine",
        "nicht",
        "auf",
        "auch",
        "sich",
        "dem",
        "für",
        "werden",
        "el",
        "los",
        "las",
        "del",
        "y",
        "es",
        "por",
        "con",
        "para",
        "una",
        "como",
        "su",
        "al",
        "lo",
        "se",
        "más",
        "il",
        "di",
        "che",
        "della",
        "delle",
        "sono",
        "nel",
        "con",
        "per",
        "gli",
        "o",
        "os",
        "da",
        "do",
        "dos",
        "em",
        "um",
        "uma",
        "não",
        "com",
        "para",
        "het",
        "van",
        "een",
        "en",
        "zijn",
        "op",
        "te",
        "voor",
        "met",
        "niet",
        "see",
        "due",
        "end",
        "own",
        "way",
        "few",
        "top",
        "yet",
        "now",
        "aim",
        "get",
        "key",
        "us",
        "too",
        "run",
        "why",
        "go",
        "let",
        "nor",
        "far",
        "off",
        "ten",
        "six",
        "fit",
        "fine",
        "file",
        "org",
        "doi",
        "www",
        "fig",
        "figs",
        "pp",
        "sp",
        "cf",
        "vs",
        "etc",
        "eds",
        "ed",
        "vol",
        "no",
        "eq",
        "eqs",
        "ref",
        "sec",
        "min",
        "max",
        "log",
        "mm",
        "ml",
        "mg",
        "cm",
        "nm",
        "kg",
        "km",
        "ii",
        "iii",
        "iv",
        "vi",
        "web",
        "pro",
        "pre",
        "re",
        "co",
        "ex",
        "sub",
    ]
)

# Relative letter frequencies of English (a..z), a serviceable stand-in for the
# shape of European-language prose: shifted or substituted text has another
# frequency profile even when its character classes look normal.
_LETTER_FREQ = [
    8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4,
    6.7, 7.5, 1.9, 0.095, 6.0, 6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074,
]  # fmt: skip
_LETTER_NORM = math.sqrt(sum(f * f for f in _LETTER_FREQ))

# The commonest Hangul syllables in running Korean text (particles, endings,
# frequent Sino-Korean roots). Real Korean has a large share of them; random
# syllables produced by a broken encoding do not.
_COMMON_HANGUL = frozenset(
    "이의다는에하고로을를가한서지기리사수도적정있대인자시아어전나들상한국결과"
    "연구해보된되서면요것위게주장성분방법문실제소중보통여라일원부무경우해당진"
)

_CID_RE = re.compile(r"\(cid:\d+\)")
_WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)
_VOWELS = frozenset("aeiouy")
# A letter standing alone that is not an initial ("J. Smith") nor "a"/"I".
_LONE_LETTER_RE = re.compile(r"(?<![\w.])(?![aAIiyoe])[^\W\d_](?![\w.])")
_LIGATURES = str.maketrans(
    {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
)
# Common words with one letter deleted that are not themselves common words.
_NEAR_MISSES = (
    frozenset(w[:i] + w[i + 1 :] for w in _COMMON_WORDS if len(w) >= 3 for i in range(len(w)))
    - _COMMON_WORDS
)


@lru_cache(maxsize=4096)
def _base_letter(ch: str) -> str:
    """Strip accents so 'é' counts as the vowel 'e'."""
    decomposed = unicodedata.normalize("NFD", ch)
    return decomposed[0].lower() if decomposed else ch.lower()


def _clamp(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0xF900 <= o <= 0xFAFF
    )


def _is_bad_char(ch: str) -> bool:
    """Code points that never belong in extracted prose."""
    if ch == "\ufffd":
        return True
    cat = unicodedata.category(ch)
    return cat in ("Co", "Cn", "Cs") or (cat == "Cc" and not ch.isspace())


def _latin_score(text: str) -> float:
    """Score Latin-script prose: common words, vowels, letter profile, word shape."""
    tokens = [t for t in _WORD_RE.findall(text) if all(ord(c) < 0x250 for c in t)]
    if not tokens:
        return 0.0
    lowered = [t.lower() for t in tokens]
    n_tok = len(tokens)

    # Share of very common words (saturates: technical prose has fewer).
    s_dict = _clamp(sum(1 for t in lowered if t in _COMMON_WORDS) / n_tok / 0.20)

    # Short lowercase tokens of real prose are almost all function words; dropped
    # or substituted glyphs turn them into fragments ("th", "nd", "gb").
    short = [t for t in tokens if t.islower() and 2 <= len(t) <= 3]
    s_short = (
        _clamp((sum(1 for t in short if t in _COMMON_WORDS) / len(short) - 0.5) / 0.3)
        if short
        else 0.5
    )
    if len(short) < 12:  # little evidence: pull towards neutral
        w = len(short) / 12
        s_short = w * s_short + (1 - w) * 0.6

    # Common words with one letter missing ("th", "nd", "wih") betray unmapped glyphs.
    near = sum(1 for t in tokens if t.islower() and t in _NEAR_MISSES) / n_tok
    s_near = 1.0 - _clamp((near - 0.04) / 0.06)

    # Acronyms and formulae (NMR, CH2) lack vowels naturally: judge ordinary words only.
    multi = [t.lower() for t in tokens if len(t) >= 2 and (t.islower() or t[1:].islower())]
    if multi:
        vowelish = {c for c in set("".join(multi)) if _base_letter(c) in _VOWELS}
        vowel_words = sum(1 for t in multi if not vowelish.isdisjoint(t))
        s_vowel = _clamp((vowel_words / len(multi) - 0.75) / 0.20)
    else:
        s_vowel = 0.0

    counts = [0] * 26
    for c, k in Counter("".join(lowered)).items():
        b = _base_letter(c)
        if "a" <= b <= "z":
            counts[ord(b) - 97] += k
    total_letters = sum(counts)
    missing = 0
    if total_letters >= 30:
        dot = sum(c * f for c, f in zip(counts, _LETTER_FREQ, strict=True))
        cos = dot / (math.sqrt(sum(c * c for c in counts)) * _LETTER_NORM)
        s_freq = _clamp((cos - 0.70) / 0.25)
        if total_letters >= 300:
            # A frequent letter (almost) absent: its glyph has no text mapping.
            for ch in "etaoinsr":
                i = ord(ch) - 97
                if counts[i] / total_letters < 0.2 * _LETTER_FREQ[i] / 100:
                    missing += 1
    else:
        s_freq = 0.6  # too little text to judge the profile

    # Word shape: words run together (missing spaces) or letters spaced apart.
    long_share = sum(1 for t in tokens if len(t) > 20) / n_tok
    lone = len(_LONE_LETTER_RE.findall(text)) / n_tok
    mean_len = sum(len(t) for t in tokens) / n_tok
    s_shape = 1.0 - _clamp((long_share - 0.02) / 0.10)
    s_shape *= 1.0 - _clamp((lone - 0.15) / 0.25)
    if mean_len < 2.3 or mean_len > 11:
        s_shape *= 0.4

    base = 0.15 * s_dict + 0.25 * s_short + 0.20 * s_freq + 0.15 * s_vowel + 0.25 * s_near
    # Garbage rarely fails just one signal, but prose in an unlisted language can:
    # the language-independent signals cap the score.
    base = min(base, 0.3 + 0.7 * min(s_freq, s_vowel))
    base *= max(0.0, 1.0 - 0.35 * missing)
    return base * s_shape


def _hangul_score(chars: list[str]) -> float:
    syllables = [c for c in chars if 0xAC00 <= ord(c) <= 0xD7A3]
    if len(syllables) < 5:
        return 0.6
    share = sum(1 for c in syllables if c in _COMMON_HANGUL) / len(syllables)
    return _clamp(share / 0.22)


def score_text(text: str) -> float:
    """Return 0..1: how usable this text is as a page's text (0 empty/garbage, 1 good prose)."""
    if not text:
        return 0.0
    text = text.translate(_LIGATURES)
    cid_chars = sum(len(m) for m in _CID_RE.findall(text))
    stripped = _CID_RE.sub(" ", text)
    chars = [c for c in stripped if not c.isspace()]
    n_total = len(chars) + cid_chars
    if n_total < 8:
        return 0.0

    n = len(chars) or 1
    # Classify each distinct character once (a page has ~100 of them, ~2000 in all).
    freq = Counter(chars)
    bad = sum(k for c, k in freq.items() if _is_bad_char(c))
    alpha = {c: k for c, k in freq.items() if c.isalpha()}
    n_letters = sum(alpha.values())
    hangul = sum(k for c, k in alpha.items() if _is_hangul(c))
    cjk = sum(k for c, k in alpha.items() if _is_cjk(c))
    latin = sum(k for c, k in alpha.items() if ord(c) < 0x250)
    other = n_letters - hangul - cjk - latin

    # Character classes: prose is mostly letters; equations and tables lower the share.
    letter_share = n_letters / n
    s_chars = _clamp((letter_share - 0.35) / 0.30)

    if n_letters:
        parts = 0.0
        if latin:
            parts += latin / n_letters * _latin_score(stripped)
        if hangul:
            parts += hangul / n_letters * _hangul_score([c for c in chars if c.isalpha()])
        if cjk:
            parts += cjk / n_letters * 0.9
        if other:  # Greek, Cyrillic, ...: judged on character classes alone
            parts += other / n_letters * 0.8
    else:
        parts = 0.0

    score = parts * (0.4 + 0.6 * s_chars)
    # Junk code points and (cid:NN) glyph names mean the font has no text mapping.
    junk_share = (bad + cid_chars) / n_total
    score *= 1.0 - _clamp(junk_share / 0.15)
    # Near-empty pages (a page number, a stray caption) cannot be trusted.
    score *= _clamp((n_total - 8) / 80)
    return round(_clamp(score), 4)


def is_usable(score: float, threshold: float = 0.5) -> bool:
    """True when a text layer scored at least ``threshold``."""
    return score >= threshold
