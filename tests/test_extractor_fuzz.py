"""Every extractor on random and adversarial input: it returns a well-formed document
or refuses with the library's own ``DocumentRejectedError``, nothing else, and its
time grows linearly with the input.

Bounded for CI: a few dozen examples per extractor, a few seconds in all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.errors import DocumentRejectedError
from retrieval.extraction import HTML, MARKDOWN, PDF, PLAIN_TEXT, ExtractedDocument, extract
from tests.support.documents import make_pdf, one_page_pdf

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: CI stays reproducible
    database=None,  # and no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.too_slow],
)


def check(data: bytes, media_type: str) -> ExtractedDocument | None:
    """Extract; a typed rejection is a fine answer, any other exception a bug."""
    try:
        document = extract(data, media_type, "fuzz", "fallback")
    except DocumentRejectedError:
        return None
    previous_end = 0
    for section in document.sections:
        assert previous_end <= section.start < section.end <= len(document.text)
        previous_end = section.end
    assert isinstance(document.title, str) and document.title
    return document


# --- random input ----------------------------------------------------------------------

MARKDOWN_PIECES = [
    "#", "##", "###### ", "# ", " ", "\t", "\n", "\n\n", "=", "-", "---", "===", "```",
    "~~~", "*", "_", "[", "]", "(", ")", "`", ">", "|", "\\", "!", "<div>", "&amp;",
    "\r", "\x0c", "\u2028", "é", "text", "Title", "0",
]  # fmt: skip
HTML_PIECES = [
    "<div>", "</div>", "<p>", "</p>", "<h1>", "</h1>", "<h3 class=x>", "</h3>", "<pre>",
    "</pre>", "<table>", "<tr>", "<td>", "</td>", "</tr>", "<br>", "</br>", "<br/>",
    "<script>", "</script>", "<style>", "</style>", "<title>", "</title>", "<template>",
    "<!--", "-->", "--!>", "<!doctype html>", "<![CDATA[", "]]>", "<?xml ?>", "<", ">",
    "</", "<a ", "<a b='", "'", '"', "=", "/", "<p hidden>", "<span aria-hidden=true>",
    "<i style='display:none'>", "/*", "*/", "&", "&amp;", "&#", "&#x41;", "&nbsp;",
    "<nav>", "<svg>", "text", "Title", " ", "\n", "\r\n", "é", "\x00",
]  # fmt: skip


def pieces(alphabet: list[str]) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), max_size=80).map(lambda p: "".join(p).encode())


@FUZZ
@given(st.one_of(pieces(MARKDOWN_PIECES), st.binary(max_size=300)))
def test_markdown_never_crashes(data: bytes) -> None:
    check(data, MARKDOWN)


@FUZZ
@given(st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=300)))
def test_plain_text_never_crashes(data: bytes) -> None:
    check(data, PLAIN_TEXT)


@FUZZ
@given(st.one_of(pieces(HTML_PIECES), st.binary(max_size=300)))
def test_html_never_crashes(data: bytes) -> None:
    check(data, HTML)


VALID_PDF = make_pdf(["First page (with parens) and \\ slashes", "Second page"])


@settings(FUZZ, max_examples=40)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_PDF) - 1), st.binary(min_size=0, max_size=8)),
        min_size=1,
        max_size=6,
    ),
    st.integers(20, len(VALID_PDF)),
)
def test_damaged_pdfs_are_refused_with_a_typed_error(
    edits: list[tuple[int, bytes]], keep: int
) -> None:
    data = bytearray(VALID_PDF)
    for offset, replacement in edits:
        data[offset : offset + len(replacement)] = replacement
    check(bytes(data[:keep]), PDF)


CONTENT_PIECES = [
    b"BT ", b"ET ", b"/F1 12 Tf ", b"(text) Tj ", b"(a\\) b) Tj ", b"<4142> Tj ",
    b"[(a) -50 (b)] TJ ", b"0 -14 Td ", b"14 TL T* ", b"(x) ' ", b"1 2 (y) \" ", b"q ", b"Q ",
    b"1 0 0 1 5 5 cm ", b"/Fm0 Do ", b"/Missing Do ", b"BI /W 1 /H 1 ID x EI ", b"[", b"]",
    b"<<", b">>", b"(", b")", b"%comment\n", b"\n",
]  # fmt: skip


@settings(FUZZ, max_examples=40)
@given(st.lists(st.sampled_from(CONTENT_PIECES), max_size=60).map(b"".join))
def test_arbitrary_content_streams_never_crash(content: bytes) -> None:
    check(one_page_pdf(content), PDF)


# --- hidden text, as a property --------------------------------------------------------

HIDERS = [
    "hidden",
    'aria-hidden="true"',
    'style="display:none"',
    "style='Display : None !important'",
    'style="visibility:hidden"',
]
CONTAINERS = ["div", "p", "span", "section", "b", "li", "blockquote", "h2", "pre", "td"]


@st.composite
def hidden_tree(draw: st.DrawFn) -> tuple[str, set[str], set[str]]:
    """Random nested markup; each element holds a unique word, some elements hide.
    Returns (markup, words that must show, words that must not)."""
    shown: set[str] = set()
    hidden: set[str] = set()
    counter = iter(range(10_000))

    def node(depth: int, inside_hidden: bool) -> str:
        tag = draw(st.sampled_from(CONTAINERS))
        hider = draw(st.sampled_from(["", "", *HIDERS]))
        is_hidden = inside_hidden or bool(hider)
        word = f"w{next(counter)}x"
        (hidden if is_hidden else shown).add(word)
        children = draw(st.integers(0, 3)) if depth < 4 else 0
        inner = " ".join(node(depth + 1, is_hidden) for _ in range(children))
        return f"<{tag} {hider}>{word} {inner}</{tag}>"

    markup = "".join(node(0, False) for _ in range(draw(st.integers(1, 3))))
    return f"<body><p>anchor</p>{markup}</body>", shown, hidden


@FUZZ
@given(hidden_tree())
def test_hidden_words_never_reach_the_text_and_visible_ones_do(
    tree: tuple[str, set[str], set[str]],
) -> None:
    markup, shown, hidden = tree
    document = extract(markup.encode(), HTML, "page.html", "page")
    words = set(re.findall(r"w\d+x", document.text))
    assert not words & hidden
    assert shown <= words


# --- time grows linearly ---------------------------------------------------------------

Maker = Callable[[int], bytes]


def _html(markup: str) -> bytes:
    return markup.encode()


# Each maker returns about ``n`` bytes.
ADVERSARIAL: list[tuple[str, str, Maker]] = [
    # Markdown: the quadratic heading pattern, and long runs of every marker.
    ("md-heading-blanks", MARKDOWN, lambda n: ("# a" + " \t" * (n // 2) + "b\nx\n").encode()),
    ("md-heading-spaces", MARKDOWN, lambda n: ("# a" + " " * n + "#b\nx\n").encode()),
    ("md-hashes", MARKDOWN, lambda n: ("#" * n + "\nx\n").encode()),
    ("md-hash-space", MARKDOWN, lambda n: ("# " + "# " * (n // 2) + "\nx\n").encode()),
    ("md-stars", MARKDOWN, lambda n: ("*" * n + "\n").encode()),
    ("md-brackets", MARKDOWN, lambda n: ("[" * n + "\n").encode()),
    ("md-backticks", MARKDOWN, lambda n: ("`" * n + "\nx\n").encode()),
    ("md-setext", MARKDOWN, lambda n: ("Title\n" + "=" * n + "\nx\n").encode()),
    ("md-heading-lines", MARKDOWN, lambda n: ("# h\nx\n" * (n // 6)).encode()),
    ("md-heading-stack", MARKDOWN, lambda n: ("# a\n## b\n### c\nx\n" * (n // 16)).encode()),
    ("md-fences", MARKDOWN, lambda n: ("```\n" * (n // 4) + "x\n").encode()),
    ("text-carriage-returns", PLAIN_TEXT, lambda n: ("a\r" * (n // 2)).encode()),
    # HTML: deep nesting, and unterminated constructs (quadratic in html.parser on
    # CPython 3.11.7, which the extractor used to parse with).
    ("html-nested-divs", HTML, lambda n: _html("<div>" * (n // 11) + "x" + "</div>" * (n // 11))),
    ("html-unclosed-divs", HTML, lambda n: _html("<div>x" * (n // 6))),
    ("html-nested-tables", HTML, lambda n: _html("<table><tr><td>x" * (n // 16))),
    ("html-hidden-nesting", HTML, lambda n: _html("<div hidden>" * (n // 12) + "<p>v</p>")),
    ("html-nested-headings", HTML, lambda n: _html("<h1>" * (n // 4) + "x")),
    ("html-open-tags", HTML, lambda n: _html("<p>x</p>" + "<a " * (n // 3))),
    ("html-open-quotes", HTML, lambda n: _html("<p>x</p>" + "<a b='" * (n // 6))),
    ("html-quoted-gt", HTML, lambda n: _html("<p>x</p>" + "<a b='>'" * (n // 8) + " z='>")),
    ("html-comments", HTML, lambda n: _html("<p>x</p>" + "<!--x>" * (n // 6))),
    ("html-lt", HTML, lambda n: _html("<p>" + "<" * n + "</p>")),
    ("html-char-refs", HTML, lambda n: _html("<p>" + "&#" * (n // 2) + "x</p>")),
    ("html-br-end-tags", HTML, lambda n: _html("<p>x" + "<br>" * (n // 8) + "</p>" * (n // 8))),
    ("html-style-comments", HTML, lambda n: _html("<p style='" + "/*" * (n // 2) + "'>x</p>")),
    ("html-meta", HTML, lambda n: b"<meta" * (n // 5) + b"<p>\xff</p>"),
    # PDF: page content pypdf has to parse.
    ("pdf-text-ops", PDF, lambda n: one_page_pdf(b"BT /F1 12 Tf (ab) Tj ET\n" * (n // 24))),
    ("pdf-long-string", PDF, lambda n: one_page_pdf(b"BT /F1 12 Tf (" + b"a" * n + b") Tj ET")),
]
BASE_SIZE = 3_000


def _best_of(runs: int, data: bytes, media_type: str) -> float:
    """The least CPU time (this thread's, ``time.thread_time``) of ``runs`` extractions:
    other processes on a busy machine take wall time from the test, not CPU time."""
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        check(data, media_type)
        best = min(best, time.thread_time() - started)
    return best


@pytest.mark.parametrize(
    ("media_type", "make"), [c[1:] for c in ADVERSARIAL], ids=[c[0] for c in ADVERSARIAL]
)
def test_time_grows_linearly_with_input_size(media_type: str, make: Maker) -> None:
    """8x the input may take at most 16x the CPU time (plus 20 ms for timer and cache
    noise): twice what linear needs, far below the 64x of a quadratic pattern. CPU time,
    not wall time, so a loaded machine stretches neither side; best of three runs, and a
    second try before failing."""
    small, large = make(BASE_SIZE), make(8 * BASE_SIZE)
    check(small, media_type)  # warm imports and caches
    for _ in range(2):
        base, scaled = _best_of(3, small, media_type), _best_of(3, large, media_type)
        if scaled < 16 * base + 0.02:
            return
    pytest.fail(
        f"{len(small)} bytes took {base:.4f} s of CPU but {len(large)} bytes {scaled:.4f} s"
    )


def test_old_and_new_heading_rules_agree_except_for_empty_closing_sequences() -> None:
    """The linear ATX reader gives the same headings as the old pattern, on every short
    line over an alphabet of the characters that matter."""
    from itertools import product

    from retrieval.extraction import atx_heading

    old = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
    for length in range(1, 8):
        for chars in product("# \ta", repeat=length):
            line = "".join(chars)
            match = old.match(line)
            expected = (len(match.group(1)), (match.group(2) or "").strip()) if match else None
            got = atx_heading(line)
            if expected and set(expected[1]) <= {"#"} and got and got[1] == "":
                continue  # "# ##": CommonMark reads an empty heading, the old pattern "##"
            assert got == expected, line


def test_the_pdf_builder_makes_readable_pdfs() -> None:
    document = extract(one_page_pdf(b"BT /F1 12 Tf 72 700 Td (hello) Tj ET"), PDF, "p", "p")
    assert document.text.strip() == "hello"
