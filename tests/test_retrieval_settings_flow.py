"""The retrieval section's search settings reach the library the gateway searches with."""

import pytest
from pydantic import ValidationError

from gateway.rag.provider import library_config
from gateway.settings.rag import RetrievalSettings


def test_cross_language_settings_reach_the_library() -> None:
    config = library_config(
        RetrievalSettings(cross_language_passage_tokens=512, page_rerank_chunks=2)
    )
    assert config.cross_language_passage_tokens == 512
    assert config.page_rerank_chunks == 2


def test_defaults_match_the_library_defaults() -> None:
    from retrieval.config import RetrievalConfig

    config = library_config(RetrievalSettings())
    assert config.cross_language_passage_tokens == RetrievalConfig().cross_language_passage_tokens
    assert config.page_rerank_chunks == RetrievalConfig().page_rerank_chunks == 0


def test_negative_page_rerank_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="page_rerank_chunks"):
        RetrievalSettings(page_rerank_chunks=-1)
