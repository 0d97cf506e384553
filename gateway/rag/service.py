"""``RetrievalService``: tenant-scoped search, and ingest and listings for the admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from gateway.errors import InvalidRequestError
from gateway.metrics import GatewayMetrics
from gateway.rag.errors import CollectionNotFoundError
from gateway.rag.provider import StoreProvider, pin_faiss_threads
from gateway.settings import RetrievalSettings
from gateway.tenancy.directory import Caller
from retrieval import (
    CollectionInfo,
    DocumentInfo,
    IngestResult,
    RetrievalConfig,
    SearchHit,
    SearchMode,
)
from retrieval import errors as lib

if TYPE_CHECKING:
    from retrieval.store import IngestInput

T = TypeVar("T")

MAX_COLLECTIONS_PER_SEARCH = 8


class RetrievalService:
    """Built once at start-up; shared by the pipeline's retrieval step and the routes.

    Concurrency rule: call its coroutines on the event loop. Searches run on a pool of
    their own (``retrieval.search_threads``) and writes (ingest, delete) on one writer
    thread, so a long ingest never delays a search, and neither occupies the loop's
    default executor. The store makes concurrent searches and writes safe; a search
    sees a collection before or after a write, never half of one.
    """

    def __init__(
        self,
        settings: RetrievalSettings,
        provider: StoreProvider,
        metrics: GatewayMetrics,
        library: RetrievalConfig,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self._metrics = metrics
        pin = partial(pin_faiss_threads, library)
        self._search_pool = ThreadPoolExecutor(
            settings.search_threads, thread_name_prefix="rag-search", initializer=pin
        )
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="rag-write", initializer=pin)

    def close(self) -> None:
        self._search_pool.shutdown(wait=False, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=True)

    # --- search -----------------------------------------------------------------------

    def options(
        self, top_k: int | None, mode: SearchMode | None, *, param: str
    ) -> tuple[int, SearchMode]:
        """A request's top_k and mode, or the configured defaults (400 over the cap)."""
        k = top_k if top_k is not None else self.settings.top_k
        if k > self.settings.max_top_k:
            raise InvalidRequestError(
                f"top_k must be at most {self.settings.max_top_k}.", param=param
            )
        return k, mode or self.settings.mode

    def searchable(self, caller: Caller, names: Sequence[str], *, param: str) -> list[str]:
        """``names`` without repeats when the caller may search them all; else the same 404
        for a forbidden name as for a missing one. Admin keys and open mode: any."""
        unique = list(dict.fromkeys(names))
        if not unique:
            raise InvalidRequestError("Name at least one collection.", param=param)
        if len(unique) > MAX_COLLECTIONS_PER_SEARCH:
            raise InvalidRequestError(
                f"At most {MAX_COLLECTIONS_PER_SEARCH} collections can be searched at once.",
                param=param,
            )
        if caller.directory is None or not caller.directory.searchable(caller, unique):
            raise CollectionNotFoundError(param)
        return unique

    async def search(
        self,
        caller: Caller,
        names: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        mode: SearchMode | None = None,
        param_prefix: str = "",
    ) -> list[SearchHit]:
        """The best chunks for ``query`` in collections the caller may search; errors
        name the request's fields as ``<param_prefix>collection`` and so on.

        Time spent (thread wait included) goes to ``loragate_retrieval_seconds``.
        """
        param = f"{param_prefix}collection"
        collections = self.searchable(caller, names, param=param)
        k, search_mode = self.options(top_k, mode, param=f"{param_prefix}top_k")
        store = await self.provider.get()
        started = time.monotonic()
        try:
            return await self._run(
                self._search_pool, store.search, collections, query, k=k, mode=search_mode
            )
        except lib.CollectionNotFoundError:
            raise CollectionNotFoundError(param) from None
        finally:
            if self._metrics.enabled:
                self._metrics.retrieval.observe(time.monotonic() - started)

    # --- administration (admin API only: no tenant checks here) ---------------------------

    async def ingest(
        self, collection: str, inputs: Sequence[IngestInput], *, skip_errors: bool
    ) -> list[IngestResult]:
        store = await self.provider.get()
        on_error = "skip" if skip_errors else "raise"
        return await self._run(
            self._write_pool, store.ingest, collection, list(inputs), on_error=on_error
        )

    async def list_collections(self) -> list[CollectionInfo]:
        store = await self.provider.get()
        return await self._run(self._search_pool, store.list_collections)

    async def list_documents(self, collection: str) -> list[DocumentInfo]:
        store = await self.provider.get()
        return await self._run(self._search_pool, store.list_documents, collection)

    async def delete_document(self, collection: str, document_id: str) -> None:
        store = await self.provider.get()
        await self._run(self._write_pool, store.delete_document, collection, document_id)

    async def delete_collection(self, collection: str) -> None:
        store = await self.provider.get()
        await self._run(self._write_pool, store.delete_collection, collection)

    @staticmethod
    async def _run(
        pool: ThreadPoolExecutor, func: Callable[..., T], *args: object, **kwargs: object
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, partial(func, *args, **kwargs))
