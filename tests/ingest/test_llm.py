"""LLM refinement against tiny real HTTP servers (canned, garbage, failing, slow)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from refserver.ingest.llm import refine_with_llm
from refserver.ingest.metadata import ExtractedMetadata

PAGE = (
    "Journal of Synthetic Studies 12 (2020) 31-45 doi:10.5555/jss.2020.0042\n"
    "Slow relaxation of strained polymer films under cyclic heating\n"
    "Anna Kowalska, Jörg Müller and Wei Zhang\n"
    "Abstract We report a slow relaxation of strained polymer films under cyclic heating "
    "and show that the response depends on the history of the sample and its temperature.\n"
    "Keywords: polymer films; relaxation"
)


def _meta() -> ExtractedMetadata:
    return ExtractedMetadata(
        title="Journal of Synthetic Studies",  # a wrong rule-based guess
        authors=["Anna Kowalska"],
        year=None,
        journal=None,
        doi=None,
        arxiv_id=None,
        abstract=None,
        keywords=[],
        sources={"title": "layout:first_page", "authors": "layout:first_page"},
    )


def _completion(content: str) -> bytes:
    return json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": content}}]}
    ).encode()


@contextmanager
def serve(
    handler: Callable[[dict], tuple[int, bytes]], delay: float = 0.0
) -> Iterator[tuple[str, list]]:
    seen: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(
                {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            )
            time.sleep(delay)
            status, payload = handler(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with suppress(OSError):  # the client may have timed out
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_canned_completion_is_merged_when_grounded() -> None:
    answer = {
        "title": "Slow relaxation of strained polymer films under cyclic heating",
        "authors": ["Anna Kowalska", "Jörg Müller", "Wei Zhang"],
        "year": 2020,
        "journal": "Journal of Synthetic Studies",
        "doi": "https://doi.org/10.5555/jss.2020.0042.",
        "abstract": None,
        "keywords": ["polymer films", "relaxation"],
    }
    content = "Here you go:\n```json\n" + json.dumps(answer, ensure_ascii=False) + "\n```"
    with serve(lambda body: (200, _completion(content))) as (url, seen):
        meta = _meta()
        out = refine_with_llm(meta, PAGE, base_url=url, model="m", api_key="k", timeout=5)
    assert seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["auth"] == "Bearer k" and seen[0]["body"]["model"] == "m"
    assert out.title == answer["title"] and out.sources["title"] == "llm"
    assert out.authors == answer["authors"] and out.sources["authors"] == "llm"
    assert out.year == 2020 and out.doi == "10.5555/jss.2020.0042"
    assert out.journal == "Journal of Synthetic Studies" and out.keywords == [
        "polymer films",
        "relaxation",
    ]
    assert meta.title == "Journal of Synthetic Studies"  # input not mutated


def test_hallucinated_values_are_not_merged() -> None:
    answer = {
        "title": "A completely different paper about quantum gravity",
        "authors": ["Anna Kowalska", "Invented Person"],
        "year": 1850,
        "doi": "10.9999/not.on.the.page",
        "keywords": ["quantum gravity"],
    }
    with serve(lambda body: (200, _completion(json.dumps(answer)))) as (url, _):
        out = refine_with_llm(
            _meta(), PAGE, base_url=url + "/v1", model="m", api_key=None, timeout=5
        )
    assert out == _meta()


def test_garbage_completion_returns_input_unchanged(caplog) -> None:
    with serve(lambda body: (200, _completion("I am sorry, I cannot help with that."))) as (url, _):
        out = refine_with_llm(_meta(), PAGE, base_url=url, model="m", api_key=None, timeout=5)
    assert out == _meta()
    assert "LLM metadata refinement skipped" in caplog.text


def test_non_json_body_and_http_error_return_input() -> None:
    with serve(lambda body: (200, b"<html>gateway</html>")) as (url, _):
        assert (
            refine_with_llm(_meta(), PAGE, base_url=url, model="m", api_key=None, timeout=5)
            == _meta()
        )
    with serve(lambda body: (500, b'{"error": "boom"}')) as (url, _):
        assert (
            refine_with_llm(_meta(), PAGE, base_url=url, model="m", api_key=None, timeout=5)
            == _meta()
        )


def test_slow_and_unreachable_endpoints_return_input() -> None:
    with serve(lambda body: (200, _completion("{}")), delay=2.0) as (url, _):
        t0 = time.monotonic()
        out = refine_with_llm(_meta(), PAGE, base_url=url, model="m", api_key=None, timeout=0.3)
        assert time.monotonic() - t0 < 1.5
    assert out == _meta()
    out = refine_with_llm(
        _meta(), PAGE, base_url="http://127.0.0.1:9", model="m", api_key=None, timeout=1
    )
    assert out == _meta()
