"""A chat request with retrieval is answered while the gateway is embedding an upload.

The admin ingest runs extraction and embedding on the retrieval service's writer
thread; searches run on their own pool against the collection's last committed
snapshot. An ingest held in the middle of embedding must therefore block neither the
event loop nor a chat completion that searches the same collection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN
from tests.support.embedders import GatedEmbedder
from tests.support.fakes import FakeEngine

GUIDE = b"# Guide\n\n## Backups\n\nBackups run nightly at two o'clock and are kept for a week.\n"
MANUAL = b"# Manual\n\n## Restores\n\nRestores copy the nightly backup back into place.\n"


async def test_a_rag_chat_is_answered_while_an_upload_is_being_embedded(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    embedder = GatedEmbedder()
    embedder.release.set()  # the first upload goes straight through
    settings = fake_settings(fake_kit, tmp_path / "data")
    engine = FakeEngine(max_model_len=2048)
    async with run_fake_gateway(settings, renderer, engine, embedder=embedder) as gateway:
        client = gateway.client
        url = "/admin/collections/kb/documents"
        first = await client.post(
            url, files=[("file", ("guide.md", GUIDE, "text/markdown"))], headers=ADMIN
        )
        assert first.status_code == 200, first.text

        embedder.release.clear()
        embedder.entered.clear()
        upload = asyncio.create_task(
            client.post(
                url, files=[("file", ("manual.md", MANUAL, "text/markdown"))], headers=ADMIN
            )
        )
        # wait until the upload is inside embed_documents (off the loop: a thread)
        assert await asyncio.to_thread(embedder.entered.wait, 10)
        chat = await asyncio.wait_for(
            client.post(
                "/v1/chat/completions",
                json={
                    "model": "tiny-base",
                    "messages": [{"role": "user", "content": "When do backups run?"}],
                    "max_tokens": 4,
                    "rag": {"collection": "kb"},
                },
                headers=ADMIN,
            ),
            timeout=10,
        )
        held = not upload.done()
        embedder.release.set()
        finished = await upload

    assert chat.status_code == 200, chat.text
    assert held  # the chat was answered while the upload was still embedding
    sources = [c["source"] for c in chat.json()["citations"]]
    assert sources == ["guide.md"]  # the committed snapshot, not half of the new one
    assert finished.status_code == 200, finished.text
