"""Text-quality scoring separates usable text layers from garbage."""

from __future__ import annotations

import random
import string

import pymupdf
import pytest

from refserver.ingest.quality import is_usable, score_text
from tests.ingest.conftest import CORPUS

KOREAN = (
    "본 연구는 기후 변화가 고산 지역 식물의 성장에 미치는 영향을 분석하였다. 세 종의 식물을 "
    "대상으로 두 계절 동안 높이와 생물량을 측정하였으며, 평균 기온이 10도를 넘을 때 성장 속도가 "
    "빨라지는 것을 확인하였다. 그러나 전체 생물량에는 유의미한 차이가 없었다. 이러한 결과는 각 "
    "종이 지역 기후에 생리적으로 적응하였음을 시사한다."
)
GERMAN = (
    "Die vorliegende Arbeit untersucht den Einfluss der Temperatur auf das Wachstum von "
    "Pflanzen in alpinen Regionen. Wir haben die Höhe und die Biomasse von drei Arten während "
    "zwei Jahreszeiten gemessen. Die Ergebnisse zeigen, dass das Wachstum schneller ist."
)


def _page_text(name: str, index: int) -> str:
    with pymupdf.open(CORPUS / "pdfs" / name) as doc:
        return doc[index].get_text()


@pytest.fixture(scope="module")
def english() -> str:
    return _page_text("dev_jner2016.pdf", 1)


def _shift(text: str, k: int) -> str:
    out = []
    for c in text:
        if c.islower():
            out.append(chr((ord(c) - 97 + k) % 26 + 97))
        elif c.isupper():
            out.append(chr((ord(c) - 65 + k) % 26 + 65))
        else:
            out.append(c)
    return "".join(out)


def test_good_english_scores_high(english: str) -> None:
    assert score_text(english) >= 0.9
    assert is_usable(score_text(english))


def test_reference_list_page_is_usable() -> None:
    assert score_text(_page_text("dev_jner2016.pdf", 8)) >= 0.6


@pytest.mark.parametrize("k", [1, 3, 13, 25])
def test_letter_shifted_text_scores_low(english: str, k: int) -> None:
    assert score_text(_shift(english, k)) < 0.4


def test_missing_letters_score_low(english: str) -> None:
    dropped = "".join(c for c in english if c.lower() != "e")  # glyph without a mapping
    assert score_text(dropped) < 0.5
    no_vowels = "".join(c for c in english if c.lower() not in "aeiou")
    assert score_text(no_vowels) < 0.2


def test_random_symbols_and_cid_junk_score_low() -> None:
    rng = random.Random(3)
    symbols = "".join(rng.choice(string.punctuation + "  ") for _ in range(2000))
    assert score_text(symbols) < 0.1
    cid = " ".join(f"(cid:{rng.randint(1, 200)})" for _ in range(300))
    assert score_text(cid) < 0.1
    pua = "".join(chr(0xE000 + ord(c)) if c.isalpha() else c for c in "Some text " * 50)
    assert score_text(pua) < 0.1


def test_words_run_together_or_spaced_apart(english: str) -> None:
    assert score_text(english.replace(" ", "").replace("\n", "")) < 0.3
    assert score_text(" ".join(english)) < 0.3


def test_empty_and_near_empty() -> None:
    assert score_text("") == 0.0
    assert score_text("   \n ") == 0.0
    assert score_text("12") == 0.0
    assert score_text("Figure 3") < 0.2


def test_korean_and_german_are_not_penalised() -> None:
    assert score_text(KOREAN) >= 0.8
    assert score_text(GERMAN) >= 0.8
    rng = random.Random(5)
    random_hangul = "".join(
        chr(rng.randint(0xAC00, 0xD7A3)) if rng.random() > 0.2 else " " for _ in range(400)
    )
    assert score_text(random_hangul) < 0.3


def test_is_usable_threshold() -> None:
    assert is_usable(0.5) and not is_usable(0.49)
    assert is_usable(0.3, threshold=0.25)
