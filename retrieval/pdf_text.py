"""PDF to text with pypdf, inside limits that a hostile file cannot get around.

A PDF is small on disk and large in memory. pypdf parses page content at 0.1-0.4
MB/s on 2 cores, so a 15 KB file whose content stream inflates to 5 MB took 14-60 s,
and a form XObject drawn thousands of times multiplies that again. Before pypdf parses
anything, the decompressed bytes it is about to parse are charged to a budget
(:class:`PdfLimits`): each page's content streams, and each form XObject every time a
page draws it. The budget is the smaller of ``max_content_bytes`` and
``max_inflation`` times the file's size (with a 1 MiB grace) -- the zip-bomb ratio
test; real documents measured here inflate 0.6-4x. pypdf is also told, through its
configuration context, to stop inflating any one stream past the budget, so memory
stays bounded while we measure. Over a limit, the document is refused with
:class:`~retrieval.errors.ExtractionLimitError`.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from retrieval.errors import CorruptDocumentError, DocumentRejectedError, ExtractionLimitError
from retrieval.sections import ExtractedDocument, Section

PDF = "application/pdf"
MIB = 1024 * 1024
MAX_PAGES = 2_000
MAX_CONTENT_BYTES = 50 * MIB
MAX_INFLATION = 100
INFLATION_GRACE_BYTES = MIB
"""Content up to this size is allowed whatever the file's own size (tiny files)."""
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class PdfLimits:
    """How much work one PDF may cost (see the module docstring)."""

    max_pages: int = MAX_PAGES
    max_content_bytes: int = MAX_CONTENT_BYTES
    max_inflation: int = MAX_INFLATION

    def content_budget(self, file_size: int) -> int:
        """Decompressed content bytes a file of ``file_size`` bytes may make pypdf parse."""
        by_ratio = max(INFLATION_GRACE_BYTES, self.max_inflation * file_size)
        return min(self.max_content_bytes, by_ratio)


class _Budget:
    """Decompressed bytes charged so far. Charges made inside a form XObject raise
    inside pypdf, which swallows errors from forms; ``exceeded`` keeps the refusal so
    that ``check`` raises it once pypdf returns."""

    def __init__(self, source: str, limits: PdfLimits, file_size: int) -> None:
        self.source = source
        self.limit = limits.content_budget(file_size)
        self.explain = (
            f"{limits.max_inflation}x the file's {file_size} bytes, at least "
            f"{INFLATION_GRACE_BYTES} and at most {limits.max_content_bytes}"
        )
        self.used = 0
        self.exceeded: ExtractionLimitError | None = None

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            self.refuse()

    def refuse(self) -> NoReturn:
        self.exceeded = self.exceeded or ExtractionLimitError(
            self.source,
            f"the PDF's content decompresses to more than {self.limit} bytes (the limit: "
            f"{self.explain}); refused as a likely decompression bomb",
        )
        raise self.exceeded

    def check(self) -> None:
        if self.exceeded is not None:
            raise self.exceeded


def extract_pdf(
    data: bytes, source: str, fallback_title: str, limits: PdfLimits | None = None
) -> ExtractedDocument:
    """Extract a PDF's text, one section per page (or per outline entry)."""
    import pypdf

    if b"%PDF-" not in data[:1024]:
        raise CorruptDocumentError(source, "not a PDF file (no %PDF- header)")
    limits = limits or PdfLimits()
    budget = _Budget(source, limits, len(data))
    # pypdf raises many exception types (PdfReadError, ValueError, KeyError, ...) on
    # damaged files; any failure while parsing means the PDF is unusable.
    try:
        with _inflation_capped(budget.limit):
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise CorruptDocumentError(source, "the PDF is encrypted")
            count = len(reader.pages)
            if count > limits.max_pages:
                raise ExtractionLimitError(
                    source, f"the PDF has {count} pages; at most {limits.max_pages} are read"
                )
            pages = [_page_text(page, budget) for page in reader.pages]
            page_paths = _outline_paths(reader, len(pages))
            metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentRejectedError:
        raise
    except pypdf.errors.LimitReachedError as exc:
        raise ExtractionLimitError(source, f"the PDF is over a pypdf safety limit ({exc})") from exc
    except Exception as exc:  # pypdf raises anything on a damaged file: re-raised as ours
        raise CorruptDocumentError(source, f"cannot read the PDF ({exc})") from exc
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for number, page_text in enumerate(pages):
        page_text = page_text.replace("\r\n", "\n").strip()
        path = page_paths[number] or (f"Page {number + 1}",)
        if page_text:
            if sections and sections[-1].heading_path == path:
                sections[-1] = Section(path, sections[-1].start, offset + len(page_text))
            else:
                sections.append(Section(path, offset, offset + len(page_text)))
            parts.append(page_text + "\n\n")
            offset += len(page_text) + 2
    title = _SPACES.sub(" ", str(metadata_title)).strip() or fallback_title
    return ExtractedDocument(title, "".join(parts), tuple(sections), PDF)


@contextlib.contextmanager
def _inflation_capped(limit: int) -> Iterator[None]:
    """pypdf's per-stream decompression limits lowered to ``limit`` for this thread
    (pypdf keeps its configuration in a context variable; older pypdf: no-op)."""
    import pypdf

    apply = getattr(pypdf, "apply_configuration", None)
    if apply is None:
        yield
        return
    cap = limit + 1
    names = (
        "zlib_maximum_output_length",
        "lzw_maximum_output_length",
        "run_length_maximum_output_length",
        "array_based_stream_maximum_output_length",
        "brotli_maximum_output_length",
    )
    known = {name: cap for name in names if hasattr(pypdf.Configuration, name)}
    with apply(**known):
        yield


def _page_text(page: Any, budget: _Budget) -> str:
    """The page's text, after charging its content streams to the budget; form
    XObjects are charged each time they are drawn (a visitor sees every ``Do``)."""
    from pypdf.generic import StreamObject

    contents = page.get("/Contents")
    contents = contents.get_object() if contents is not None else None
    streams = contents if isinstance(contents, list) else [contents]
    for stream in streams:
        stream = stream.get_object() if stream is not None else None
        if isinstance(stream, StreamObject):
            budget.charge(_decoded_size(stream, budget))
    forms = _forms_by_name(page)
    if not forms:
        return page.extract_text() or ""
    drawn: dict[str, int] = {}

    def before(operator: bytes, operands: list[Any], *_: Any) -> None:
        if budget.exceeded is not None:
            raise budget.exceeded
        if operator == b"Do" and operands and str(operands[0]) in forms:
            name = str(operands[0])
            if name not in drawn:
                drawn[name] = max(_decoded_size(form, budget) for form in forms[name])
            budget.charge(drawn[name])

    text = page.extract_text(visitor_operand_before=before) or ""
    budget.check()
    return text


def _decoded_size(stream: Any, budget: _Budget) -> int:
    """The stream's decompressed size (pypdf keeps the data for the extraction that
    follows). pypdf stops inflating at the budget: that is the budget refusing."""
    from pypdf.errors import LimitReachedError

    try:
        return len(stream.get_data())
    except LimitReachedError:
        budget.refuse()


def _forms_by_name(page: Any) -> dict[str, list[Any]]:
    """Every form XObject the page can draw, at any depth, by resource name (no
    stream is decompressed here)."""
    from pypdf.generic import DictionaryObject, StreamObject

    found: dict[str, list[Any]] = {}
    seen: set[int] = set()
    pending = [page.get("/Resources")]
    while pending:
        resources = pending.pop()
        resources = resources.get_object() if resources is not None else None
        if not isinstance(resources, DictionaryObject):
            continue
        xobjects = resources.get("/XObject")
        xobjects = xobjects.get_object() if xobjects is not None else None
        if not isinstance(xobjects, DictionaryObject):
            continue
        for name, value in xobjects.items():
            form = value.get_object()
            if not isinstance(form, StreamObject) or form.get("/Subtype") != "/Form":
                continue
            if id(form) in seen:
                continue
            seen.add(id(form))
            found.setdefault(str(name), []).append(form)
            pending.append(form.get("/Resources"))
    return found


def _outline_paths(reader: Any, page_count: int) -> list[tuple[str, ...]]:
    """Heading path for each page from the PDF outline (bookmarks); empty without one.

    A nested list of entries sits under the entry before it. Walked depth-first in
    document order with an explicit stack of ``[entries, parent path, last path]``.
    """
    starts: list[tuple[int, tuple[str, ...]]] = []
    try:
        outline = list(reader.outline or [])
    except Exception:  # noqa: BLE001 -- a damaged outline costs the headings, not the document
        outline = []
    frames: list[tuple[Iterator[Any], tuple[str, ...], list[tuple[str, ...]]]] = [
        (iter(outline), (), [()])
    ]
    while frames:
        entries, path, last = frames[-1]
        item = next(entries, None)
        if item is None:
            frames.pop()
        elif isinstance(item, list):
            frames.append((iter(item), last[0], [last[0]]))
        else:
            title = str(getattr(item, "title", "") or "").strip()
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 -- an outline entry pointing nowhere is skipped
                continue
            last[0] = (*path, title)
            if page is not None and 0 <= page < page_count:
                starts.append((page, last[0]))
    # One sweep: a page takes the path of the last entry starting at or before it
    # (setting every later page once per entry would cost pages x entries).
    starts.sort(key=lambda item: item[0])
    paths: list[tuple[str, ...]] = []
    current: tuple[str, ...] = ()
    index = 0
    for number in range(page_count):
        while index < len(starts) and starts[index][0] <= number:
            current = starts[index][1]
            index += 1
        paths.append(current)
    return paths
