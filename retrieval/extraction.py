"""Text extraction: Markdown, plain text, HTML and PDF.

Each extractor turns raw bytes into an :class:`ExtractedDocument`: one text plus the
sections that headings cut it into (``retrieval.sections``). HTML lives in
``retrieval.html_text``, PDF in ``retrieval.pdf_text``; this module picks the
extractor and reads Markdown and plain text.

Every extractor runs in time linear in its input (``tests/test_extractor_fuzz.py``
checks the scaling on adversarial inputs): documents come from users, and one
super-linear pattern is enough for a small file to hold an ingest worker for minutes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePath

from retrieval.errors import BinaryFileError, EmptyDocumentError, UnsupportedFileTypeError
from retrieval.html_text import HTML, extract_html
from retrieval.pdf_text import PDF, PdfLimits, extract_pdf
from retrieval.sections import ExtractedDocument, Section, SectionBuilder

__all__ = [
    "EXTENSIONS",
    "HTML",
    "MARKDOWN",
    "MEDIA_TYPES",
    "PDF",
    "PLAIN_TEXT",
    "ExtractedDocument",
    "PdfLimits",
    "Section",
    "atx_heading",
    "decode_text",
    "extract",
    "media_type_for",
]

MARKDOWN = "text/markdown"
PLAIN_TEXT = "text/plain"
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


def extract(
    data: bytes,
    media_type: str,
    source: str,
    fallback_title: str,
    *,
    pdf_limits: PdfLimits | None = None,
) -> ExtractedDocument:
    """Extract ``data`` as ``media_type``; raise a ``DocumentRejectedError`` subclass when
    the bytes are binary, unparsable, over ``pdf_limits`` (default: ``PdfLimits()``) or
    hold no text."""
    if not data.strip():
        raise EmptyDocumentError(source, "the file is empty")
    if media_type == PDF:
        document = extract_pdf(data, source, fallback_title, pdf_limits)
    else:
        document = _EXTRACTORS[media_type](data, source, fallback_title)
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

_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_OPEN = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")


def atx_heading(line: str) -> tuple[int, str] | None:
    r"""``(level, text)`` when ``line`` (no newline) is an ATX heading (``## Title ##``).

    String operations, not one regular expression: the pattern this replaces,
    ``(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$``, retried the closing-sequence branch at
    every character of the lazy title, rescanning the run of blanks ahead each time:
    a 20 KB line of ``# a`` then spaces and tabs took 6 s (40 KB: 25 s).
    """
    opener = _ATX_OPEN.match(line)
    if opener is None:
        return None
    content = line[opener.end() :].strip(" \t")
    body = content.rstrip("#")
    if not body:  # only the closing sequence: an empty heading
        content = ""
    elif body != content and body[-1] in " \t":  # a closing sequence after a blank
        content = body.rstrip(" \t")
    return len(opener.group(1)), content.strip()


def _markdown(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    text = decode_text(data, source)
    builder = SectionBuilder()
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
        elif atx := atx_heading(stripped):
            level, heading = atx
            builder.heading(level, heading, pos, pos + len(line))
            title = title or (heading if level == 1 else "")
        elif (
            _SETEXT.match(stripped)
            and prev_line.strip()
            and prev_start >= builder.start
            and atx_heading(prev_line) is None
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


_EXTRACTORS: dict[str, Callable[[bytes, str, str], ExtractedDocument]] = {
    MARKDOWN: _markdown,
    PLAIN_TEXT: _plain_text,
    HTML: extract_html,
}
