"""Synthetic but paper-shaped PDFs (title, authors, abstract, DOI, body) for bulk tests and bench.

Text is drawn from a vocabulary of real scientific words so tokenisation and
embedding cost what real prose costs; every paper differs (seeded RNG).
"""

from __future__ import annotations

import random
from pathlib import Path

import pymupdf

WORDS = [
    "analysis",
    "method",
    "model",
    "data",
    "results",
    "measurement",
    "system",
    "protein",
    "cell",
    "energy",
    "beam",
    "temperature",
    "sample",
    "network",
    "learning",
    "signal",
    "structure",
    "function",
    "gene",
    "expression",
    "particle",
    "detector",
    "accelerator",
    "magnetic",
    "field",
    "spectrum",
    "frequency",
    "phase",
    "transition",
    "neural",
    "response",
    "patient",
    "clinical",
    "trial",
    "outcome",
    "survival",
    "species",
    "habitat",
    "fossil",
    "sediment",
    "climate",
    "ocean",
    "carbon",
    "nitrogen",
    "soil",
    "plant",
    "growth",
    "yield",
    "enzyme",
    "reaction",
    "catalyst",
    "surface",
    "interface",
    "layer",
    "thin",
    "film",
    "crystal",
    "lattice",
    "electron",
    "photon",
    "laser",
    "optical",
    "fiber",
    "wavelength",
    "resolution",
    "imaging",
    "microscopy",
    "simulation",
    "algorithm",
    "optimization",
    "parameter",
    "estimation",
    "uncertainty",
    "error",
    "variance",
    "distribution",
    "probability",
    "inference",
    "regression",
    "classification",
    "feature",
    "dataset",
    "benchmark",
    "performance",
    "efficiency",
    "throughput",
    "latency",
    "memory",
    "storage",
    "compression",
    "protocol",
    "security",
    "privacy",
    "encryption",
    "we",
    "show",
    "that",
    "the",
    "this",
    "these",
    "our",
    "approach",
    "proposed",
    "significant",
    "increase",
    "decrease",
    "compared",
    "with",
    "between",
    "under",
    "over",
    "during",
    "after",
    "observed",
    "measured",
    "estimated",
    "derived",
    "calculated",
    "reported",
    "previous",
    "recent",
    "novel",
]
FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kim",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
]
LAST = [
    "Schmidt",
    "Novak",
    "Garcia",
    "Tanaka",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Larsen",
    "Silva",
    "Okafor",
    "Meyer",
    "Chen",
]


def sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(8, 22))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def paragraph(rng: random.Random, words: int) -> str:
    out: list[str] = []
    count = 0
    while count < words:
        s = sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


def make_paper_pdf(
    path: Path,
    seed: int,
    *,
    pages: int = 3,
    words_per_page: int = 220,
    doi: str | None = None,
    title: str | None = None,
) -> Path:
    """A born-digital paper: big title, author line, abstract, DOI, then body pages."""
    rng = random.Random(seed)
    title = title or " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 11))).title()
    authors = ", ".join(f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(rng.randint(1, 4)))
    doi = doi or f"10.{5000 + seed % 4000}/synth.{seed}"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page()
        y = 72.0
        if i == 0:
            page.insert_textbox(pymupdf.Rect(72, y, 540, y + 70), title, fontsize=18)
            y += 74
            page.insert_textbox(pymupdf.Rect(72, y, 540, y + 20), authors, fontsize=11)
            y += 24
            page.insert_textbox(
                pymupdf.Rect(72, y, 540, y + 14), f"https://doi.org/{doi}", fontsize=8
            )
            y += 22
            abstract = "Abstract. " + paragraph(rng, 90)
            page.insert_textbox(pymupdf.Rect(72, y, 540, y + 130), abstract, fontsize=9)
            y += 140
        body = paragraph(rng, words_per_page if i else words_per_page // 2)
        page.insert_textbox(pymupdf.Rect(72, y, 540, 770), body, fontsize=10)
    doc.set_metadata({"title": title, "author": authors})
    doc.save(path)
    doc.close()
    return path
