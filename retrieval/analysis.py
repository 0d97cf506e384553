"""Language-aware lexical analysis for BM25: tokens, stop words, Snowball stems.

A text is analysed in *one* language (its document's, detected or configured):

1. lowercase; compound tokens are kept whole *and* split (``ERR-4013`` gives
   ``err-4013``, ``err``, ``4013``; ``/etc/apt/sources.list`` the path and its parts);
2. the language's stop words are dropped (only that language's: ``die`` is an English
   word, ``son`` a French one);
3. alphabetic words are stemmed with the language's Snowball stemmer (PyStemmer), then
   accents are folded, so ``paramètres`` and ``parametres`` meet.

A query may be in another language than the documents (a French question over an
English manual): :meth:`Analyzer.query_terms` drops the *query's* stop words, then
stems the remaining words with the query's stemmer and with each document language's
stemmer, so identifiers (``pg_restore``) and shared roots (``configuration``) match.

Language detection (:func:`detect_language`) counts stop-word hits per language: no
model, no dependency, microseconds per kilobyte, and right for prose of a few words
up (a stop word is what every sentence has). Text with too few hits gets the default.

Concurrency: PyStemmer's ``Stemmer`` objects must not be shared between threads, so an
:class:`Analyzer` keeps one set per thread (``threading.local``); the rest is immutable.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import Stemmer  # PyStemmer, in the ``rag`` extra: imported where a stemmer is built

ANALYZER_VERSION = 2
"""Bump when terms change: an index saved with another version is rebuilt on load.
1: English stop words and plural stripping; 2: per-language Snowball stems."""

DEFAULT_LANGUAGE = "en"

_STOP_WORDS_TEXT = {
    "en": """a about after all also an and any are as at be because been but by can could
        do does for from had has have how i if in into is it its may more most no not of
        on or other should so some such than that the their them then there these they
        this to under use used using was we were what when where which while who why will
        with would you your""",
    "fr": """à au aux avec ce ces cette comme comment dans de des du elle en est et être
        il ils je la le les leur lors mais me même mon ne ni nous on ont ou où par pas
        peut pour quand que quel quelle quelles quels qui sa sans se ses si son sont sur
        ta te tes toi ton tous tout très tu un une vos votre vous y d l j n qu s c""",
    "de": """aber als am an auch auf aus bei bin bis bist da das dass dem den der des die
        dies diese diesem diesen dieser du ein eine einem einen einer eines er es für hat
        ich ihr im in ist ja kann kein man mit muss nach nicht noch nur ob oder sein sich
        sie sind so um und uns von vom was welche welcher welches wenn werden wie wir wird
        wo zu zum zur""",
    "es": """a al algo como con cómo cual cuál cuando cuándo de del donde dónde el él en
        entre es esta está este esto estos hay la las le lo los más me mi muy no o para
        pero por qué que se si sí sin sobre son su sus también un una uno unos y ya yo""",
    "it": """a al alla alle anche che chi come con cosa da dal dalla dei del della delle
        di e è gli ha hanno il in io la le lo ma mi nel nella non o per più può quale
        quando se si sono su sua suo tra un una uno""",
    "pt": """a ao aos as até com como da das de do dos e é ela ele em entre era essa esse
        está isso mais mas me muito na nas não no nos o os ou para pela pelo por quais
        qual quando que se sem ser seu sua são também um uma""",
    "nl": """aan al als bij dan dat de die dit door een en er het hij hoe ik in is je kan
        maar met mijn naar niet nog of om onder ook op over te tot uit van voor was wat
        wie wij wordt zal ze zich zijn""",
}
STOP_WORDS: dict[str, frozenset[str]] = {
    code: frozenset(text.split()) for code, text in _STOP_WORDS_TEXT.items()
}
STEMMERS = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
}
LANGUAGES: tuple[str, ...] = tuple(STEMMERS)

_TOKEN = re.compile(r"[^\W_]+(?:[-_.:/@+'’][^\W_]+)*")
_SPLIT = re.compile(r"[-_.:/@+'’]")
_WORD = re.compile(r"[^\W\d_]+")
_MAX_TOKEN_CHARS = 64
_DETECT_CHARS = 20_000
_MIN_HITS = 2


def fold_accents(word: str) -> str:
    """``word`` without combining marks (``paramètre`` -> ``parametre``)."""
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def detect_language(
    text: str, candidates: Sequence[str] = LANGUAGES, default: str = DEFAULT_LANGUAGE
) -> str:
    """The language in ``candidates`` whose stop words ``text`` uses most (the first
    20,000 characters are read); ``default`` when fewer than two stop words match or
    the best languages tie."""
    counts = Counter(_WORD.findall(text[:_DETECT_CHARS].lower()))
    scores = sorted(
        ((sum(counts[w] for w in STOP_WORDS[code] if w in counts), code) for code in candidates),
        reverse=True,
    )
    if not scores or scores[0][0] < _MIN_HITS:
        return default
    if len(scores) > 1 and scores[1][0] == scores[0][0]:
        return default if default in (scores[0][1], scores[1][1]) else scores[0][1]
    return scores[0][1]


def check_language(language: str) -> str:
    """``language`` if it is ``"auto"`` or a supported code, else ``ValueError``."""
    if language != "auto" and language not in STEMMERS:
        raise ValueError(f"language must be 'auto' or one of {', '.join(LANGUAGES)}")
    return language


class Analyzer:
    """Index and query terms in the supported languages (see the module docstring).

    Thread-safe: each thread gets its own stemmers.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _stemmer(self, language: str) -> Stemmer.Stemmer:
        stemmers: dict[str, Stemmer.Stemmer] | None = getattr(self._local, "stemmers", None)
        if stemmers is None:
            stemmers = self._local.stemmers = {}
        stemmer = stemmers.get(language)
        if stemmer is None:
            import Stemmer

            stemmer = stemmers[language] = Stemmer.Stemmer(STEMMERS[language])
        return stemmer

    def terms(self, text: str, language: str = DEFAULT_LANGUAGE) -> list[str]:
        """Index terms of ``text`` read as ``language``, in order."""
        tokens = tokenize(text, STOP_WORDS[language])
        return self._stem(tokens, language)

    def query_terms(
        self, text: str, language: str, index_languages: Iterable[str] = ()
    ) -> list[str]:
        """Terms of a query in ``language``, plus the stems its words get in every
        language of ``index_languages`` (each term once beyond its own repeats)."""
        tokens = tokenize(text, STOP_WORDS[language])
        terms = self._stem(tokens, language)
        seen = set(terms)
        for other in index_languages:
            if other == language or other not in STEMMERS:
                continue
            for term in self._stem(tokens, other):
                if term not in seen:
                    seen.add(term)
                    terms.append(term)
        return terms

    def _stem(self, tokens: list[str], language: str) -> list[str]:
        stemmer = self._stemmer(language)
        words = [i for i, t in enumerate(tokens) if t.isalpha() and len(t) > 2]
        stems = stemmer.stemWords([tokens[i] for i in words])
        result = list(tokens)
        for i, stem in zip(words, stems, strict=True):
            result[i] = stem
        return [fold_accents(t) for t in result]


def tokenize(text: str, stop_words: frozenset[str] = frozenset()) -> list[str]:
    """Lowercased tokens; compounds whole (up to 64 characters) and split into parts;
    ``stop_words`` dropped (only as whole tokens and as parts)."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        parts = _SPLIT.split(token)
        if len(parts) > 1:
            if "'" in token or "’" in token:  # l'index, d'une: elisions are not compounds
                tokens.extend(p for p in parts if len(p) > 1 and p not in stop_words)
                continue
            if len(token) <= _MAX_TOKEN_CHARS:
                tokens.append(token)
            tokens.extend(p for p in parts if len(p) > 1 and p not in stop_words)
        elif token not in stop_words and len(token) <= _MAX_TOKEN_CHARS:
            tokens.append(token)
    return tokens
