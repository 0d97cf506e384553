"""Decoding and tokenizing HTML in time proportional to its size.

Why not ``html.parser`` (through BeautifulSoup): on the CPython this project runs
(3.11.7; fixed only in 3.9.23/3.10.18/3.11.13/3.12.11/3.13.4, CVE-2025-6069) its
handling of unterminated constructs is quadratic -- 24 KB of ``<a `` took 20 s to
parse and 96 KB 271 s -- and the tree it builds is walked by recursion. Every step
here consumes input with ``str.find`` or an anchored regular expression that cannot
look past the token it reads, so no character is scanned twice.

Tokenization follows the HTML5 rules where they matter for text: a tag left open at
the end of the file is dropped with the rest of the file, attribute values may hold
``>``, ``script``/``style``/``textarea``/``title`` (and the other raw-text elements)
end only at their own end tag, and comments, doctypes and processing instructions
are dropped.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Generator, Iterator
from typing import NamedTuple


class StartTag(NamedTuple):
    name: str
    attrs: dict[str, str]


class EndTag(NamedTuple):
    name: str


class Text(NamedTuple):
    text: str


Token = StartTag | EndTag | Text

_WS = "\t\n\f\r "
_TAG_NAME = re.compile(rf"[^{_WS}/>]*")
_BEFORE_ATTR = re.compile(rf"[{_WS}/]*")
_ATTR_NAME = re.compile(rf"[^{_WS}/>][^{_WS}/=>]*")
_SPACES = re.compile(rf"[{_WS}]*")
_UNQUOTED = re.compile(rf"[^{_WS}>]*")
_COMMENT_END = re.compile(r"--!?>")
_RAW_TEXT = frozenset(("script", "style", "xmp", "iframe", "noembed", "noframes", "noscript"))
_ESCAPABLE_RAW_TEXT = frozenset(("textarea", "title"))
_raw_end_cache: dict[str, re.Pattern[str]] = {}


def _raw_end(name: str) -> re.Pattern[str]:
    pattern = _raw_end_cache.get(name)
    if pattern is None:
        pattern = re.compile(rf"</{name}[{_WS}/>]", re.IGNORECASE)
        _raw_end_cache[name] = pattern
    return pattern


def _unescape(text: str) -> str:
    return html.unescape(text) if "&" in text else text


def _end_of(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that may match nothing) stops matching from ``pos``."""
    match = pattern.match(text, pos)
    return match.end() if match else pos


def _tag(text: str, pos: int) -> tuple[str, dict[str, str], int] | None:
    """The tag whose name starts at ``pos`` (just after ``<`` or ``</``): its name,
    attributes and the position after its ``>``; None when the file ends inside it."""
    end = len(text)
    i = _end_of(_TAG_NAME, text, pos)
    name = text[pos:i].lower()
    attrs: dict[str, str] = {}
    while True:
        i = _end_of(_BEFORE_ATTR, text, i)
        if i >= end:
            return None
        if text[i] == ">":
            return name, attrs, i + 1
        start, i = i, _end_of(_ATTR_NAME, text, i)
        attr = text[start:i].lower()
        j = _end_of(_SPACES, text, i)
        if j >= end or text[j] != "=":
            attrs.setdefault(attr, "")
            continue
        j = _end_of(_SPACES, text, j + 1)
        if j >= end:
            return None
        if text[j] in "\"'":
            close = text.find(text[j], j + 1)
            if close < 0:
                return None
            value, i = text[j + 1 : close], close + 1
        else:
            i = _end_of(_UNQUOTED, text, j)
            value = text[j:i]
        attrs.setdefault(attr, _unescape(value))


def tokenize(text: str) -> Iterator[Token]:
    """The start tags, end tags and text of ``text``, in order (entities decoded)."""
    end = len(text)
    pos = 0
    while pos < end:
        lt = text.find("<", pos)
        if lt < 0:
            yield Text(_unescape(text[pos:]))
            return
        if lt > pos:
            yield Text(_unescape(text[pos:lt]))
        following = text[lt + 1 : lt + 2]
        if following.isascii() and following.isalpha():
            tag = _tag(text, lt + 1)
            if tag is None:
                return
            name, attrs, pos = tag
            yield StartTag(name, attrs)
            if name in _RAW_TEXT or name in _ESCAPABLE_RAW_TEXT:
                closer = _raw_end(name).search(text, pos)
                stop = closer.start() if closer else end
                raw = text[pos:stop]
                if raw:
                    yield Text(_unescape(raw) if name in _ESCAPABLE_RAW_TEXT else raw)
                pos = stop
        elif following == "/":
            pos = yield from _end_tag(text, lt)
        elif text.startswith("<!--", lt):
            pos = _comment_end(text, lt)
        elif text.startswith("<![CDATA[", lt):
            close = text.find("]]>", lt + 9)
            yield Text(text[lt + 9 : close if close >= 0 else end])
            pos = close + 3 if close >= 0 else end
        elif following in ("!", "?"):
            pos = _bogus_comment_end(text, lt + 2)
        else:
            yield Text("<")
            pos = lt + 1


def _end_tag(text: str, lt: int) -> Generator[Token, None, int]:
    """Yields what ``</`` at ``lt`` starts (an end tag, or text) and returns where the
    tokenizer goes on."""
    following = text[lt + 2 : lt + 3]
    if following.isascii() and following.isalpha():
        tag = _tag(text, lt + 2)
        if tag is None:
            return len(text)
        yield EndTag(tag[0])
        return tag[2]
    if following == ">":
        return lt + 3
    if not following:
        yield Text("</")
        return lt + 2
    return _bogus_comment_end(text, lt + 2)


def _comment_end(text: str, lt: int) -> int:
    start = lt + 4
    if text.startswith(">", start):  # <!--> is an empty comment
        return start + 1
    if text.startswith("->", start):  # so is <!--->
        return start + 2
    match = _COMMENT_END.search(text, start)
    return match.end() if match else len(text)


def _bogus_comment_end(text: str, start: int) -> int:
    close = text.find(">", start)
    return close + 1 if close >= 0 else len(text)


# --- decoding ----------------------------------------------------------------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,512}?charset[\t\n\f\r ]*=[\t\n\f\r ]*["']?[\t\n\f\r ]*([\w.:-]{1,40})""",
    re.IGNORECASE,
)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([\w.:-]{1,40})["']""")
_PRESCAN_BYTES = 4096
_AS_WINDOWS_1252 = frozenset(("latin-1", "iso8859-1", "ascii", "cp1252"))


def decode_html(data: bytes) -> str:
    """The text of an HTML file: by its byte-order mark, else UTF-8 when it decodes,
    else the charset its head declares, else Windows-1252 (as browsers default to).

    Only the first 4 KiB are searched for a declaration (HTML5 prescans 1 KiB), with
    bounded patterns: guessing from the whole file is what made decoding slow.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _newlines(data[len(bom) :].decode(codec, errors="replace"))
    try:
        return _newlines(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return _newlines(data.decode(_declared_codec(data[:_PRESCAN_BYTES]), errors="replace"))


def _declared_codec(head: bytes) -> str:
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if match is None:
        return "cp1252"
    try:
        codec = codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return "cp1252"
    # HTML5 reads these labels as Windows-1252; a declared UTF-16/32 without a BOM is
    # a mistake (the bytes were not valid UTF-16 text once we get here).
    if codec in _AS_WINDOWS_1252 or codec.startswith(("utf-16", "utf-32", "utf-8")):
        return "cp1252"
    return codec


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
