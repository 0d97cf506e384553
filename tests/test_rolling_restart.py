"""Zero lost streams in a rolling restart: two real ``loragate serve`` gateways (remote
mode, a paced fake replica behind them) behind a real HAProxy health-checking
``/ready``; each gateway is restarted in turn (SIGTERM, exit 0, start) while workers
stream through HAProxy. Every request completes or is refused before it starts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.rolling_restart import Rig, rolling_restart
from tests.conftest import FakeKit

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")


@pytest.fixture
def rig(fake_kit: FakeKit, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, fake_kit.base)
    try:
        rig.start(count=2, token_delay=0.02, tokens=20, drain=20)
        yield rig
    finally:
        rig.stop()


def test_rolling_restart_loses_no_stream(rig: Rig):
    outcomes = asyncio.run(rolling_restart(rig, workers=4))
    print(dict(outcomes))
    assert outcomes["cut"] == 0
    assert outcomes["completed"] > 10
    assert [g.exit_codes for g in rig.gateways] == [[0], [0]]
