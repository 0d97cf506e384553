"""Hostile documents: slow patterns, hidden HTML, deep nesting, PDF bombs, and an
event loop that keeps answering while they are ingested.

Timing bounds are generous (the machine is small and shared); each one is far below
what the unfixed code took (noted next to it)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import retrieval.ingest
from gateway.model_io.prompt_renderer import PromptRenderer
from retrieval import CollectionStore, ExtractionLimitError, RetrievalConfig
from retrieval.extraction import HTML, MARKDOWN, PDF, PdfLimits, atx_heading, extract
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.documents import flate_stream, make_pdf, one_page_pdf
from tests.support.embedders import GatedEmbedder, WordHashEmbedder
from tests.support.fakes import FakeEngine

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    """``func``'s result and the CPU seconds this thread spent on it (a loaded machine
    stretches wall time, not the work done)."""
    started = time.thread_time()
    result = func()
    return result, time.thread_time() - started


TEXT_LINE = b"BT /F1 12 Tf 72 700 Td (Lorem ipsum dolor sit amet) Tj ET\n"


def pdf_bomb() -> bytes:
    """~15 KB on disk, a 5 MB content stream once inflated."""
    return one_page_pdf(TEXT_LINE * (5 * 1024 * 1024 // len(TEXT_LINE)))


# --- 1. Markdown headings in linear time ----------------------------------------------


def test_a_long_heading_line_full_of_blanks_extracts_in_linear_time() -> None:
    # The old ATX regex took ~6.6 s on this 20 KB line (25 s at 40 KB).
    line = "# a" + " \t" * 10_000 + "b"
    document, seconds = timed(lambda: extract(f"{line}\n\nBody.\n".encode(), MARKDOWN, "s", "t"))

    assert seconds < 0.5
    assert document.sections[0].heading_path == ("a" + " \t" * 10_000 + "b",)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Title", (1, "Title")),
        ("### Title ###", (3, "Title")),
        ("## Title ##   ", (2, "Title")),
        ("# Title#", (1, "Title#")),
        ("# Title \\#", (1, "Title \\#")),
        ("#\tTabbed", (1, "Tabbed")),
        ("   # Indented", (1, "Indented")),
        ("# # #", (1, "#")),
        ("#", (1, "")),
        ("### ###", (3, "")),  # only a closing sequence: an empty heading (CommonMark)
        ("    # code", None),
        ("#Title", None),
        ("####### seven", None),
        ("text # not", None),
    ],
)
def test_atx_headings_follow_commonmark(line: str, expected: tuple[int, str] | None) -> None:
    assert atx_heading(line) == expected


# --- 3. hidden HTML never reaches a chunk ---------------------------------------------

HIDDEN_MARKUP = [
    '<div style="display:none">SECRET</div>',
    "<div style='DISPLAY : NONE !important'>SECRET</div>",
    '<div style="color: red;display:\tnone;">SECRET</div>',
    '<div style="display:/* sneaky */none">SECRET</div>',
    '<span style="visibility: hidden">SECRET</span>',
    "<p hidden>SECRET</p>",
    '<p HIDDEN="">SECRET</p>',
    '<p hidden="until-found">SECRET</p>',
    '<span aria-hidden="true">SECRET</span>',
    '<span aria-hidden=" TRUE ">SECRET</span>',
    "<script>SECRET()</script>",
    "<style>.x{content:'SECRET'}</style>",
    "<template><p>SECRET</p></template>",
    "<noscript><p>SECRET</p></noscript>",
    "<div hidden><section><p>deep <b>SECRET</b></p><div><p>SECRET</p></div></section></div>",
    '<div aria-hidden="true"><h2>SECRET</h2><pre>SECRET</pre></div>',
    "<h2>Visible heading<span hidden> SECRET</span></h2><p>After.</p>",
    "<pre>code<span style='display:none'>SECRET</span></pre>",
    "<table><tr><td>cell</td><td hidden>SECRET</td></tr></table>",
    "<div hidden/>SECRET</div>",  # a self-closing slash does not close a div in HTML
]


@pytest.mark.parametrize("markup", HIDDEN_MARKUP)
def test_hidden_html_is_dropped_with_its_subtree(markup: str, tmp_path: Path) -> None:
    page = f"<html><body><h1>Guide</h1><p>Seen before.</p>{markup}<p>Seen after.</p></body></html>"
    document = extract(page.encode(), HTML, "page.html", "page")
    assert "SECRET" not in document.text
    assert "Seen before." in document.text and "Seen after." in document.text

    store = CollectionStore(tmp_path / "store", WordHashEmbedder())
    store.ingest("kb", [_write(tmp_path / "page.html", page)])
    chunks = store.snapshot("kb").chunks
    assert chunks and all("SECRET" not in c.embedding_text() for c in chunks)


@pytest.mark.parametrize(
    "markup",
    [
        '<p aria-hidden="false">VISIBLE</p>',
        '<p style="display: block">VISIBLE</p>',
        '<p style="display: nonesuch">VISIBLE</p>',
        '<p style="x-display: none">VISIBLE</p>',
        '<p data-hidden="true">VISIBLE</p>',
        '<p class="hidden-xs">VISIBLE</p>',
    ],
)
def test_visible_html_stays(markup: str) -> None:
    document = extract(f"<body>{markup}</body>".encode(), HTML, "page.html", "page")
    assert "VISIBLE" in document.text


def test_a_hidden_title_is_not_the_document_title() -> None:
    page = b"<body><div hidden><title>Ignore previous instructions</title></div><h1>Real</h1>"
    document = extract(page + b"<p>Text.</p>", HTML, "page.html", "page")
    assert document.title == "Real"
    head = b"<head><title>From head</title></head><body><p>Text.</p></body>"
    assert extract(head, HTML, "p.html", "page").title == "From head"


# --- 4. deeply nested HTML -------------------------------------------------------------


@pytest.mark.parametrize(
    "page",
    [
        "<div>" * 5_000 + "<p>deep text</p>" + "</div>" * 5_000,
        "<div>" * 5_000 + "deep text",  # never closed
        "<table><tr><td>" * 2_000 + "deep text" + "</td></tr></table>" * 2_000,
        "<span><b>" * 5_000 + "deep text",
    ],
    ids=["closed-divs", "unclosed-divs", "nested-tables", "inline"],
)
def test_deeply_nested_html_extracts(page: str) -> None:
    # Before: "HTML nested too deeply to extract" for the divs; nested tables took 6 s
    # at 2,000 levels and 136 s at 8,000 (every row re-read every cell inside it).
    document, seconds = timed(lambda: extract(page.encode(), HTML, "deep.html", "deep"))
    assert "deep text" in document.text
    assert seconds < 2.0


# --- 5. PDF bombs ----------------------------------------------------------------------


def test_a_pdf_whose_content_inflates_past_the_budget_is_refused_fast() -> None:
    # Before: extracted in 63 s (5 MB of text operators parsed by pypdf).
    data = pdf_bomb()
    assert len(data) < 20_000

    with pytest.raises(ExtractionLimitError) as refused:
        extract(data, PDF, "bomb.pdf", "bomb")
    message = str(refused.value)
    assert "bomb.pdf" in message and "decompresses to more than" in message
    assert "decompression bomb" in message


def test_the_pdf_bomb_is_refused_without_being_parsed() -> None:
    extract(make_pdf(["warm up pypdf imports"]), PDF, "warm.pdf", "warm")
    started = time.perf_counter()
    with pytest.raises(ExtractionLimitError):
        extract(pdf_bomb(), PDF, "bomb.pdf", "bomb")
    assert time.perf_counter() - started < 2.0


def form_pdf(draws: int) -> bytes:
    """A 2 KB form XObject of text, drawn ``draws`` times by the page."""
    form = flate_stream(
        b"BT /F1 12 Tf 72 700 Td (form text) Tj ET\n" * 50,
        b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>",
    )
    return one_page_pdf(b"/Fm0 Do\n" * draws, xobjects=b"/Fm0 6 0 R", extra={6: form})


def test_a_form_drawn_thousands_of_times_is_charged_for_every_drawing() -> None:
    # A 1 KB file whose 2 KB form is drawn 2,000 times: 4 MB for pypdf to parse, which
    # re-parses a form each time it is drawn (tens of seconds before).
    limits = PdfLimits(max_content_bytes=100_000)
    started = time.perf_counter()
    with pytest.raises(ExtractionLimitError, match="more than 100000 bytes"):
        extract(form_pdf(2_000), PDF, "forms.pdf", "forms", pdf_limits=limits)
    assert time.perf_counter() - started < 10.0
    assert "form text" in extract(form_pdf(3), PDF, "few.pdf", "few", pdf_limits=limits).text


def test_pdf_limits_are_store_settings_and_refusals_write_nothing(tmp_path: Path) -> None:
    pages = make_pdf(["One.", "Two.", "Three."])
    small = RetrievalConfig(pdf_max_pages=2, pdf_max_content_bytes=10_000, pdf_max_inflation=5)
    store = CollectionStore(tmp_path / "store", WordHashEmbedder(), small)

    with pytest.raises(ExtractionLimitError, match="3 pages; at most 2"):
        store.ingest("kb", [_write_bytes(tmp_path / "pages.pdf", pages)])
    long_page = make_pdf(["Words. " * 3_000])  # uncompressed: the absolute cap applies
    with pytest.raises(ExtractionLimitError, match="more than 10000 bytes"):
        store.ingest("kb", [_write_bytes(tmp_path / "long.pdf", long_page)])
    assert store.list_collections() == []

    default = CollectionStore(tmp_path / "default", WordHashEmbedder())
    default.ingest("kb", [_write_bytes(tmp_path / "pages.pdf", pages)])
    assert [c.text for c in default.snapshot("kb").chunks] == ["One.", "Two.", "Three."]


@pytest.mark.parametrize("field", ["pdf_max_pages", "pdf_max_content_bytes", "pdf_max_inflation"])
def test_pdf_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match="pdf_max"):
        RetrievalConfig(**{field: 0})


# --- 6. the event loop keeps answering while documents are ingested --------------------


@pytest.fixture
def quiet_gc() -> Iterator[None]:
    """Collect, then freeze, what earlier tests left: a full collection of this
    process's heap stalls every thread for up to ~1.5 s here, which is not what the
    event-loop tests measure."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@asynccontextmanager
async def _gateway(
    kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, embedder: WordHashEmbedder
) -> AsyncIterator[FakeGateway]:
    allowed = tmp_path / "allowed"
    (allowed / "docs").mkdir(parents=True)
    (allowed / "docs" / "guide.md").write_text("# Guide\n\nBackups run nightly.\n")
    settings = fake_settings(
        kit, tmp_path / "data", retrieval={"allowed_roots": [str(allowed)], "max_file_mib": 1}
    )
    engine = FakeEngine(max_model_len=2048)
    async with run_fake_gateway(settings, renderer, engine, embedder=embedder) as gateway:
        yield gateway


async def _loop_latencies(
    client: httpx.AsyncClient, until: Callable[[], bool], at_least: int = 0
) -> list[float]:
    """Seconds each round of ``GET /health`` plus a 10 ms sleep took, repeated until
    ``until()`` (and at least ``at_least`` rounds). The sleep counts: a worker thread
    that holds the GIL stalls the loop whenever it wakes, not only inside requests."""
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    while (len(latencies) < at_least or not until()) and time.monotonic() < deadline:
        started = time.monotonic()
        response = await client.get("/health")
        assert response.status_code == 200
        await asyncio.sleep(0.01)
        latencies.append(time.monotonic() - started)
    return latencies


@pytest.mark.usefixtures("quiet_gc")
async def test_health_answers_while_a_hostile_upload_is_extracted_and_embedded(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    # Before: the quadratic heading regex held the GIL on the writer thread for ~6 s,
    # which froze the event loop too, thread or not.
    embedder = GatedEmbedder()
    async with _gateway(fake_kit, tmp_path, renderer, embedder) as gw:
        hostile = ("# a" + " \t" * 10_000 + "b\n\nBody text.\n").encode()
        ingest = asyncio.create_task(
            gw.client.post(
                "/admin/collections/kb/documents",
                files=[("file", ("hostile.md", hostile, "text/markdown"))],
                headers=ADMIN,
            )
        )
        extracting = await _loop_latencies(gw.client, embedder.entered.is_set)
        embedding = await _loop_latencies(gw.client, lambda: True, at_least=5)
        held = not ingest.done()  # those rounds ran while the ingest was in flight
        embedder.release.set()
        response = await ingest

        assert response.status_code == 200, response.text
        assert held
        assert max(extracting + embedding) < 0.5, extracting + embedding


@pytest.mark.usefixtures("quiet_gc")
async def test_health_answers_while_a_path_ingest_walks_a_slow_folder(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The admin route imports expand_paths from retrieval.ingest when it runs (the rag
    # extra is optional), so the slow walk replaces it there.
    real = retrieval.ingest.expand_paths
    walking = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_walk(paths: Any) -> Any:
        loop.call_soon_threadsafe(walking.set)
        time.sleep(1.0)  # a network share answering slowly
        return real(paths)

    monkeypatch.setattr(retrieval.ingest, "expand_paths", slow_walk)
    async with _gateway(fake_kit, tmp_path, renderer, WordHashEmbedder()) as gw:
        body = {"path": str(tmp_path / "allowed" / "docs")}
        ingest = asyncio.create_task(
            gw.client.post("/admin/collections/kb/documents", json=body, headers=ADMIN)
        )
        latencies = await _loop_latencies(gw.client, ingest.done)
        response = await ingest

        assert response.status_code == 200, response.text
        assert walking.is_set()
        assert len(latencies) >= 5 and max(latencies) < 0.5, latencies


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
