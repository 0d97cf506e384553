"""What the browser tests share: Debian's chromium driven by selenium (skipped where one of
them is missing), and a gateway app served by uvicorn on loopback in a thread."""

from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [
    name
    for name, found in (
        ("chromium", CHROMIUM),
        ("chromedriver (Debian: chromium-driver)", CHROMEDRIVER),
        ("selenium (pip)", importlib.util.find_spec("selenium")),
    )
    if not found
]
needs_browser = pytest.mark.skipif(
    bool(MISSING), reason=f"browser test needs {', '.join(MISSING)} (make install adds them)"
)
TIMEOUT_S = 30


@contextmanager
def served(app: Any, port: int, name: str) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1:``port`` in a thread; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_S)


@contextmanager
def chromium(width: int, height: int) -> Iterator[Any]:
    """A headless chromium window of ``width`` x ``height`` CSS pixels, its console logged."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
