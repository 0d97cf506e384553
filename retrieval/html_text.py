"""HTML to text: paragraphs separated by blank lines, headings cutting sections.

The document is read as a stream of tokens (``retrieval.html_tokens``) with an explicit
stack of open elements, never as a tree walked by recursion: a page nested 5,000 levels
deep extracts like any other, in time proportional to its size.

Only what a reader would see becomes text. Dropped with everything inside them:

* elements browsers never render (``head``, ``title``, ``script``, ``style``,
  ``template``, ``noscript``, ...) and page furniture (``nav``, ``header``, ``footer``,
  forms, tables of contents, ``role="navigation"``);
* hidden elements: the ``hidden`` attribute, ``aria-hidden="true"``, or an inline
  style with ``display: none`` or ``visibility: hidden`` (any case or spacing,
  ``!important`` or not). Text a human never sees is how a page smuggles instructions
  to the model (prompt injection), so it must not reach a chunk.

Hiding through a stylesheet class (``.x { display: none }``) is not detected.
"""

from __future__ import annotations

import re

from retrieval.errors import BinaryFileError
from retrieval.html_tokens import EndTag, StartTag, Text, decode_html, tokenize
from retrieval.sections import ExtractedDocument, SectionBuilder

HTML = "text/html"

_SKIP_TAGS_TEXT = """
    head title script style noscript template datalist nav header footer svg iframe form
    button select object canvas
    """
_SKIP_TAGS = frozenset(_SKIP_TAGS_TEXT.split())
_BLOCK_TAGS_TEXT = """
    p div section article main aside li ul ol dl dt dd table thead tbody tfoot
    blockquote figure figcaption caption address details summary hr body html
    """
_BLOCK_TAGS = frozenset(_BLOCK_TAGS_TEXT.split())
_VOID_TAGS_TEXT = """
    area base br col embed hr img input link meta param source track wbr keygen menuitem
    basefont bgsound frame image isindex nextid spacer command
    """
_VOID_TAGS = frozenset(_VOID_TAGS_TEXT.split())
_BOILERPLATE_CLASSES = frozenset({"toc", "navheader", "navfooter", "breadcrumb", "breadcrumbs"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACES = re.compile(r"\s+")
_HIDING_STYLE = re.compile(
    r"(?:^|[;{\s])(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse))(?![\w-])",
    re.IGNORECASE,
)

# What an open element does with the text inside it.
_INLINE, _BLOCK, _HEADING, _PRE, _ROW, _CELL, _TITLE = range(7)


def is_hidden(attrs: dict[str, str]) -> bool:
    """Whether an element's own attributes hide it (and so its whole subtree)."""
    if "hidden" in attrs or attrs.get("aria-hidden", "").strip().lower() == "true":
        return True
    style = attrs.get("style", "")
    return bool(style) and _HIDING_STYLE.search(_without_comments(style)) is not None


def _without_comments(css: str) -> str:
    """``css`` without ``/* ... */`` comments (``display:/**/none`` hides too). A loop
    of ``find`` calls: a lazy regex would rescan an unclosed comment from every ``/*``."""
    if "/*" not in css:
        return css
    parts, pos = [], 0
    while (start := css.find("/*", pos)) >= 0:
        parts.append(css[pos:start])
        close = css.find("*/", start + 2)
        if close < 0:
            return "".join(parts)
        parts.append(" ")
        pos = close + 2
    parts.append(css[pos:])
    return "".join(parts)


class _Open:
    """One element on the stack of open elements."""

    __slots__ = ("kind", "name", "suppressed", "title_blocked")

    def __init__(self, name: str, kind: int, suppressed: bool, title_blocked: bool) -> None:
        self.name = name
        self.kind = kind
        self.suppressed = suppressed
        self.title_blocked = title_blocked


_ROOT = _Open("", _BLOCK, False, False)


class _Flattener:
    """Turns the token stream into paragraphs; headings cut sections and stay in the
    text on their own line. A heading, ``pre`` or table row being read captures all
    the text inside it as one paragraph (``capture_kind``); a row keeps one list of
    strings per cell, and text belongs to the innermost open cell only."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.inline: list[str] = []
        self.builder = SectionBuilder()
        self.first_h1 = ""
        self.title: str | None = None
        self.stack: list[_Open] = []
        self.open_counts: dict[str, int] = {}
        self.capture_kind: int | None = None
        self.capture: list[str] = []
        self.cells: list[list[str]] = []
        self.open_cells: list[int] = []

    def write(self, paragraph: str) -> None:
        if paragraph:
            self.parts.append(paragraph + "\n\n")
            self.length += len(paragraph) + 2

    def flush(self) -> None:
        if self.inline:
            self.write(_SPACES.sub(" ", "".join(self.inline)).strip())
            self.inline.clear()

    def start(self, name: str, attrs: dict[str, str]) -> None:
        parent = self.stack[-1] if self.stack else _ROOT
        if name in _VOID_TAGS:
            if name == "br" and not parent.suppressed:
                self.text("\n")
            return
        skip = (
            name in _SKIP_TAGS
            or attrs.get("role") == "navigation"
            or not _BOILERPLATE_CLASSES.isdisjoint(attrs.get("class", "").split())
            or is_hidden(attrs)
        )
        suppressed = parent.suppressed or skip
        title_blocked = parent.title_blocked or (skip and name not in ("head", "title"))
        kind = _TITLE if name == "title" else _INLINE
        if suppressed or kind == _TITLE:
            pass
        elif self.capture_kind == _ROW:
            if name in ("td", "th"):
                kind = _CELL
                self.open_cells.append(len(self.cells))
                self.cells.append([])
        elif self.capture_kind is not None:
            pass
        elif name in _HEADINGS or name in ("pre", "tr"):
            kind = _HEADING if name in _HEADINGS else _PRE if name == "pre" else _ROW
            self.flush()
            self.capture_kind = kind
        elif name in _BLOCK_TAGS:
            kind = _BLOCK
            self.flush()
        self.stack.append(_Open(name, kind, suppressed, title_blocked))
        self.open_counts[name] = self.open_counts.get(name, 0) + 1

    def end(self, name: str) -> None:
        if not self.open_counts.get(name):
            if name == "br":  # HTML5 reads a stray </br> as <br>
                self.start("br", {})
            return  # an end tag with nothing to close is ignored
        while True:
            entry = self.stack.pop()
            self.open_counts[entry.name] -= 1
            self.close(entry)
            if entry.name == name:
                return

    def text(self, text: str) -> None:
        parent = self.stack[-1] if self.stack else _ROOT
        if parent.kind == _TITLE:
            if self.title is None and not parent.title_blocked:
                self.title = _SPACES.sub(" ", text).strip()
        elif parent.suppressed:
            return
        elif self.capture_kind is None:
            self.inline.append(text)
        elif self.capture_kind != _ROW:
            self.capture.append(text)
        elif self.open_cells:
            self.cells[self.open_cells[-1]].append(text)

    def close(self, entry: _Open) -> None:
        kind = entry.kind
        if kind == _BLOCK:
            self.flush()
        elif kind == _CELL:
            self.open_cells.pop()
        elif kind == self.capture_kind:
            if kind == _HEADING:
                self.heading(_HEADINGS[entry.name], " ".join(self.capture))
            elif kind == _PRE:
                self.write("".join(self.capture).strip("\n").rstrip())
            else:
                cells = [" ".join(s.strip() for s in c if s.strip()) for c in self.cells]
                self.write(_SPACES.sub(" ", " | ".join(c for c in cells if c)).strip())
            self.capture_kind, self.capture, self.cells, self.open_cells = None, [], [], []

    def heading(self, level: int, text: str) -> None:
        heading = _SPACES.sub(" ", text).strip()
        self.builder.heading(level, heading, self.length, self.length)
        self.write(heading)
        self.builder.start = self.length
        if level == 1 and not self.first_h1:
            self.first_h1 = heading

    def finish(self) -> str:
        while self.stack:
            self.close(self.stack.pop())
        self.flush()
        text = "".join(self.parts)
        self.builder.close(len(text))
        return text


def extract_html(data: bytes, source: str, fallback_title: str) -> ExtractedDocument:
    """Extract an HTML file's visible text (see the module docstring)."""
    if b"\x00" in data[:8192]:
        raise BinaryFileError(source, "binary data (NUL bytes) in an HTML file")
    markup = decode_html(data)
    flattener = _Flattener()
    for token in tokenize(markup):
        if isinstance(token, Text):
            flattener.text(token.text)
        elif isinstance(token, StartTag):
            flattener.start(token.name, token.attrs)
        elif isinstance(token, EndTag):
            flattener.end(token.name)
    text = flattener.finish()
    title = flattener.title or flattener.first_h1 or fallback_title
    return ExtractedDocument(title, text, tuple(flattener.builder.sections), HTML)
