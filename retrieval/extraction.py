"""Text extraction: Markdown, plain text, HTML (BeautifulSoup) and PDF (pypdf).

Each extractor turns raw bytes into an :class:`ExtractedDocument`: one text plus the
sections that headings cut it into. The chunker never crosses a section boundary, so a
chunk's heading path is exact. Offsets index :attr:`ExtractedDocument.text`.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

from retrieval.errors import (
    BinaryFileError,
    CorruptDocumentError,
    EmptyDocumentError,
    UnsupportedFileTypeError,
)

MARKDOWN = "text/markdown"
PLAIN_TEXT = "text/plain"
HTML = "text/html"
PDF = "application/pdf"
MEDIA_TYPES = (MARKDOWN, PLAIN_TEXT, HTML, PDF)

EXTENSIONS = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": PLAIN_TEXT,
    ".text": PLAIN_TEXT,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": PDF,
}


@dataclass(frozen=True, slots=True)
class Section:
    """A run of body text ``text[start:end]`` under one heading path."""

    heading_path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ExtractedDocument:
    """The text of one document and the heading sections it is made of."""

    title: str
    text: str
    sections: tuple[Section, ...]
    media_type: str


def media_type_for(name: str, declared: str | None = None, source: str | None = None) -> str:
    """The media type to extract file ``name`` as: ``declared`` if given, else by its
    extension; errors name ``source`` (defaults to ``name``)."""
    if declared is not None:
        media_type = declared.split(";")[0].strip().lower()
        if media_type in MEDIA_TYPES:
            return media_type
        raise UnsupportedFileTypeError(source or name, f"unsupported media type {declared!r}")
    suffix = PurePath(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    supported = ", ".join(sorted(EXTENSIONS))
    raise UnsupportedFileTypeError(
        source or name,
        f"unsupported file type {suffix or '(no extension)'!r}; supported: {supported}",
    )


def extract(data: bytes, media_type: str, source: str, fallback_title: str) -> ExtractedDocument:
    """Extract ``data`` as ``media_type``; raise a ``DocumentRejectedError`` subclass when
    the bytes are binary, unparsable or hold no text."""
    if not data.strip():
        raise EmptyDocumentError(source, "the file is empty")
    extractor = _EXTRACTORS[media_type]
    document = extractor(data, source, fallback_title)
    if not any(document.text[s.start : s.end].strip() for s in document.sections):
        raise EmptyDocumentError(source, "no extractable text")
    return document


def decode_text(data: bytes, source: str) -> str:
    """Decode a text file: UTF-8 (BOM allowed), else Windows-1252; refuse binary data."""
    head = data[:8192]
    if b"\x00" in head:
        raise BinaryFileError(source, "binary data (NUL bytes) in a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:8192]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(8, len(sample) // 100):
        raise BinaryFileError(source, "binary data (control characters) in a text file")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- Markdown and plain text -------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


class _SectionBuilder:
    """Collects sections while a heading stack tracks the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.start = 0

    def heading(self, level: int, title: str, heading_start: int, body_start: int) -> None:
        self.close(heading_start)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        if title:
            self.stack.append((level, title))
        self.start = body_start

    def close(self, end: int) -> None:
        if end > self.start:
            path = tuple(title for _, title in self.stack)
            self.sections.append(Section(path, self.start, end))
        self.start = end


def _markdown(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    text = decode_text(data, source)
    builder = _SectionBuilder()
    title = ""
    fence: str | None = None
    pos = 0
    prev_start, prev_line = 0, ""
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        opener = _FENCE.match(stripped)
        if fence is not None:
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = None
        elif opener:
            fence = opener.group(1)
        elif atx := _ATX.match(stripped):
            heading = (atx.group(2) or "").strip()
            builder.heading(len(atx.group(1)), heading, pos, pos + len(line))
            title = title or (heading if len(atx.group(1)) == 1 else "")
        elif (
            _SETEXT.match(stripped)
            and prev_line.strip()
            and prev_start >= builder.start
            and not _ATX.match(prev_line)
        ):
            level = 1 if stripped.strip()[0] == "=" else 2
            heading = prev_line.strip()
            builder.heading(level, heading, prev_start, pos + len(line))
            title = title or (heading if level == 1 else "")
        prev_start, prev_line = pos, stripped
        pos += len(line)
    builder.close(len(text))
    return ExtractedDocument(title or fallback_title, text, tuple(builder.sections), MARKDOWN)


def _plain_text(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    text = decode_text(data, source)
    return ExtractedDocument(fallback_title, text, (Section((), 0, len(text)),), PLAIN_TEXT)


# --- HTML --------------------------------------------------------------------------

_SKIP_TAGS_TEXT = """
    script style noscript template head nav header footer svg iframe form button select
    object canvas
    """
_SKIP_TAGS = frozenset(_SKIP_TAGS_TEXT.split())
_BLOCK_TAGS_TEXT = """
    p div section article main aside li ul ol dl dt dd table thead tbody tfoot blockquote
    figure figcaption caption address details summary hr body html
    """
_BLOCK_TAGS = frozenset(_BLOCK_TAGS_TEXT.split())
_BOILERPLATE_CLASSES = frozenset({"toc", "navheader", "navfooter", "breadcrumb", "breadcrumbs"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACES = re.compile(r"\s+")


class _HtmlFlattener:
    """Walks the DOM and writes paragraphs separated by blank lines; headings cut
    sections and appear in the text on their own line."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.inline: list[str] = []
        self.builder = _SectionBuilder()
        self.first_h1 = ""

    def write(self, paragraph: str) -> None:
        if paragraph:
            self.parts.append(paragraph + "\n\n")
            self.length += len(paragraph) + 2

    def flush(self) -> None:
        self.write(_SPACES.sub(" ", "".join(self.inline)).strip())
        self.inline.clear()

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Comment | Declaration | Doctype | ProcessingInstruction):
                continue
            if isinstance(child, NavigableString):
                self.inline.append(str(child))
            elif isinstance(child, Tag):
                self.element(child)

    def element(self, tag: Tag) -> None:
        name = tag.name.lower()
        classes = set(tag.get_attribute_list("class") or [])
        if name in _SKIP_TAGS or classes & _BOILERPLATE_CLASSES or tag.get("role") == "navigation":
            return
        if name in _HEADINGS:
            self.flush()
            heading = _SPACES.sub(" ", tag.get_text(" ")).strip()
            self.builder.heading(_HEADINGS[name], heading, self.length, self.length)
            self.write(heading)
            self.builder.start = self.length
            if name == "h1" and not self.first_h1:
                self.first_h1 = heading
        elif name == "pre":
            self.flush()
            self.write(tag.get_text().strip("\n").rstrip())
        elif name == "tr":
            self.flush()
            cells = [c.get_text(" ", strip=True) for c in tag.find_all(["td", "th"])]
            self.write(_SPACES.sub(" ", " | ".join(c for c in cells if c)).strip())
        elif name == "br":
            self.inline.append("\n")
        elif name in _BLOCK_TAGS:
            self.flush()
            self.walk(tag)
            self.flush()
        else:
            self.walk(tag)


def _html(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    if b"\x00" in data[:8192]:
        raise BinaryFileError(source, "binary data (NUL bytes) in an HTML file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bs4 warns about XHTML parsed as HTML
        soup = BeautifulSoup(data, "html.parser")
    flattener = _HtmlFlattener()
    try:
        flattener.walk(soup.body if soup.body is not None else soup)
    except RecursionError as exc:
        raise CorruptDocumentError(source, "HTML nested too deeply to extract") from exc
    flattener.flush()
    text = "".join(flattener.parts)
    flattener.builder.close(len(text))
    title_tag = soup.title.get_text(" ", strip=True) if soup.title else ""
    title = _SPACES.sub(" ", title_tag) or flattener.first_h1 or fallback_title
    return ExtractedDocument(title, text, tuple(flattener.builder.sections), HTML)


# --- PDF ---------------------------------------------------------------------------


def _pdf(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    import pypdf

    if b"%PDF-" not in data[:1024]:
        raise CorruptDocumentError(source, "not a PDF file (no %PDF- header)")
    # pypdf raises many exception types (PdfReadError, ValueError, KeyError, ...) on
    # damaged files; any failure while parsing means the PDF is unusable.
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise CorruptDocumentError(source, "the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        page_paths = _pdf_outline_paths(reader, len(pages))
        metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except CorruptDocumentError:
        raise
    except Exception as exc:
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


def _pdf_outline_paths(reader: object, page_count: int) -> list[tuple[str, ...]]:
    """Heading path for each page from the PDF outline (bookmarks); empty without one."""
    starts: list[tuple[int, tuple[str, ...]]] = []

    def visit(items: list[object], path: tuple[str, ...]) -> None:
        last: tuple[str, ...] = path
        for item in items:
            if isinstance(item, list):
                visit(item, last)
                continue
            title = str(getattr(item, "title", "") or "").strip()
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            except Exception:  # an outline entry pointing nowhere is just skipped
                continue
            last = (*path, title)
            if page is not None and 0 <= page < page_count:
                starts.append((page, last))

    try:
        outline = list(getattr(reader, "outline", []) or [])
    except Exception:  # a damaged outline costs the headings, not the document
        outline = []
    visit(outline, ())
    paths: list[tuple[str, ...]] = [() for _ in range(page_count)]
    for page, path in sorted(starts, key=lambda item: item[0]):
        for number in range(page, page_count):
            paths[number] = path
    return paths


_EXTRACTORS: dict[str, Callable[[bytes, str, str], ExtractedDocument]] = {
    MARKDOWN: _markdown,
    PLAIN_TEXT: _plain_text,
    HTML: _html,
    PDF: _pdf,
}
